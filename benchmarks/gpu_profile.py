"""Where the ViT-B/16 encoder's time goes on a GPU, and what a few changes to it would gain.

Times the bf16 encoder (mask ratio 0, random weights) eagerly, lists the kernels that take its time
(torch.profiler), then times variants, each against the same baseline and each with its largest embedding
deviation from the baseline:

- each of SDPA's attention backends forced (flash, cuDNN, memory-efficient);
- the patch embedding as cuDNN's strided convolution instead of one GEMM (`PatchEmbed.as_gemm`);
- fc1's bias and GELU in cuBLASLt's GEMM epilogue (`torch._addmm_activation`, which uses the tanh
  approximation of GELU: not the model's exact GELU, so this one is a measurement, not an option).

    python -m benchmarks.gpu_profile --batch-size 512
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
from collections.abc import Callable, Iterator

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from vitmae import ViTMAEConfig, ViTMAEModel
from vitmae.layers import Mlp, PatchEmbed

logger = logging.getLogger("gpu_profile")


def median_ms(fn: Callable[[], object], iters: int = 10, rounds: int = 5) -> float:
    """Median over rounds of the milliseconds per call, timed with CUDA events after a warm-up call."""
    fn()
    times = []
    for _ in range(rounds):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / iters)
    return statistics.median(times)


def patch_embed_as_convolution(self: PatchEmbed, pixel_values: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N, L, D] through cuDNN's strided convolution, as on the CPU, in place of `as_gemm`."""
    return self.proj(pixel_values).flatten(2).transpose(1, 2)


def mlp_with_gelu_epilogue(self: Mlp, x: torch.Tensor) -> torch.Tensor:
    hidden = torch._addmm_activation(self.fc1.bias, x.flatten(0, -2), self.fc1.weight.t(), use_gelu=True)
    return self.fc2(hidden.view(*x.shape[:-1], -1))


@contextlib.contextmanager
def patched(cls: type, name: str, replacement: Callable) -> Iterator[None]:
    original = getattr(cls, name)
    setattr(cls, name, replacement)
    try:
        yield
    finally:
        setattr(cls, name, original)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--kernels", type=int, default=14, help="kernels to list")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(0)
    model = ViTMAEModel(ViTMAEConfig()).to("cuda", torch.bfloat16).eval()
    pixels = torch.randn(args.batch_size, 3, 224, 224, device="cuda", dtype=torch.bfloat16)

    def embed() -> torch.Tensor:
        return model(pixels, mask_ratio=0.0).last_hidden_state[:, 1:].float().mean(dim=1)

    with torch.inference_mode():
        reference = embed()
        base = median_ms(embed)
        print(
            f"{torch.cuda.get_device_name()}, torch {torch.__version__}; ViT-B/16 bf16 encoder, batch {args.batch_size}"
        )
        print(f"baseline: {base:.2f} ms a batch, {args.batch_size / base * 1e3:.0f} images/s")

        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            for _ in range(3):
                embed()
            torch.cuda.synchronize()
        events = [e for e in prof.key_averages() if e.device_time_total > 0]
        total = sum(e.self_device_time_total for e in events)
        print(f"\n{'kernel':70} {'share':>6} {'ms/batch':>9} {'calls/batch':>11}")
        for e in sorted(events, key=lambda e: -e.self_device_time_total)[: args.kernels]:
            print(
                f"{e.key[:70]:70} {e.self_device_time_total / total:6.1%} "
                f"{e.self_device_time_total / 3e3:9.2f} {e.count / 3:11.0f}"
            )

        variants: dict[str, contextlib.AbstractContextManager] = {
            "SDPA flash": sdpa_kernel(SDPBackend.FLASH_ATTENTION),
            "SDPA cuDNN": sdpa_kernel(SDPBackend.CUDNN_ATTENTION),
            "SDPA memory-efficient": sdpa_kernel(SDPBackend.EFFICIENT_ATTENTION),
            "patch embedding as conv": patched(PatchEmbed, "forward", patch_embed_as_convolution),
            "fc1 + tanh-GELU epilogue": patched(Mlp, "forward", mlp_with_gelu_epilogue),
        }
        print(f"\n{'variant':28} {'ms/batch':>9} {'images/s':>9} {'vs baseline':>11} {'max |d embedding|':>18}")
        for name, context in variants.items():
            try:
                with context:
                    ms = median_ms(embed)
                    deviation = (embed() - reference).abs().max().item()
            except RuntimeError as err:
                print(f"{name:28} failed: {str(err).splitlines()[0][:80]}")
                continue
            print(f"{name:28} {ms:9.2f} {args.batch_size / ms * 1e3:9.0f} {base / ms:10.2f}x {deviation:18.2e}")


if __name__ == "__main__":
    main()
