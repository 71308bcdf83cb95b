"""How well each anomaly score finds labelled anomalies: the reconstruction loss (1 and 4 masks), the kNN distance
(on the embeddings as stored, and centred), and rules that fuse the two, by AUROC and precision, per kind of anomaly.

Two sets whose normal images ship with the packages: scikit-learn's handwritten digit scans, and crops of
scikit-image's colour photographs. For each, the project's pre-training job trains the demo's small MAE on normal
images, and a random-weight model of the same shape is the floor. Then for each seed and each kind and severity of
anomaly, a run's worth of images: the held-out normals with a few anomalies made from other held-out normals (foreign
content pasted in, noise, blur, heavy JPEG compression, over-exposure, blank, text, other content), scored by the
embedding job's own model stage (`Embedder`, no Ray) and ranked as `vitmae anomalies` ranks them.

    python -m benchmarks.anomaly_quality --workdir /tmp/aq --seeds 3
"""

from __future__ import annotations

import argparse
import io
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter

from benchmarks.common import hardware
from pipeline.embed.embedder import Embedder
from pipeline.embed.infer import InferConfig
from pipeline.retrieval.anomalies import descending_ranks
from pipeline.storage import Storage
from pipeline.train.evaluate import embed_encoded, similarities

logger = logging.getLogger("benchmarks.anomaly_quality")

HELD_OUT = 400  # normal images in each scored set
PER_KIND = 8  # anomalies of one kind and severity among them: rare, and fewer than K, as in a real run
K = 10  # neighbours of the kNN distance, as `vitmae anomalies` by default
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "motorcycle_right.png")
FOREIGN = ("hubble_deep_field.jpg", "camera.png", "moon.png", "retina.jpg")  # other content, for the photographs
SCORES = (
    "loss K=1",
    "loss K=4",
    "loss |z|",
    "knn",
    "knn centred",
    "rank mean",
    "max z",
    "sum z",
    "max |z|",
    "max z centred",
)


def skimage_data() -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data"


def digits() -> list[Image.Image]:
    """scikit-learn's 1,797 digit scans at 32 x 32, as the demo makes them."""
    from sklearn.datasets import load_digits

    from pipeline.demo import scan_image

    return [scan_image(scan) for scan in load_digits().images]


def crops(names: tuple[str, ...], count: int, rng: np.random.Generator, side: int = 64) -> list[Image.Image]:
    """`count` random square crops (10 to 40 % of the photograph's area) of the photographs, at `side` pixels."""
    sources = [Image.open(skimage_data() / name).convert("RGB") for name in names]
    out = []
    for i in range(count):
        image = sources[i % len(sources)]
        size = int(np.sqrt(rng.uniform(0.1, 0.4) * image.width * image.height))
        size = min(size, image.width, image.height)
        x, y = rng.integers(0, image.width - size + 1), rng.integers(0, image.height - size + 1)
        out.append(image.crop((x, y, x + size, y + size)).resize((side, side), Image.Resampling.BICUBIC))
    return out


def text_crops(count: int, rng: np.random.Generator, side: int) -> list[Image.Image]:
    return crops(("text.png", "page.png"), count, rng, side)


# An anomaly: (a normal image, its severity 0 or 1, a foreign image, rng) -> (the image, its file format).
Make = Callable[[Image.Image, int, Image.Image, np.random.Generator], tuple[Image.Image, str]]


def pasted(
    image: Image.Image, severity: int, foreign: Image.Image, rng: np.random.Generator
) -> tuple[Image.Image, str]:
    """A patch of foreign content over 1/9 (mild) or 1/4 (strong) of the image."""
    side = image.width // (3 if severity == 0 else 2)
    out = image.convert("RGB")
    x, y = rng.integers(0, image.width - side + 1, size=2)
    out.paste(foreign.convert("RGB").resize((side, side)), (int(x), int(y)))
    return out, "PNG"


def noise(image: Image.Image, severity: int, foreign: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    pixels = np.asarray(image.convert("RGB"), np.float32)
    pixels += rng.normal(0, (0.08, 0.2)[severity] * 255, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), "PNG"


def blur(image: Image.Image, severity: int, foreign: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    return image.filter(ImageFilter.GaussianBlur(image.width * (0.025, 0.06)[severity])), "PNG"


def compressed(
    image: Image.Image, severity: int, foreign: Image.Image, rng: np.random.Generator
) -> tuple[Image.Image, str]:
    """JPEG at quality 15 or 3 (the bytes scored are the JPEG's)."""
    return image.convert("RGB"), ("JPEG", 15) if severity == 0 else ("JPEG", 3)


def exposed(
    image: Image.Image, severity: int, foreign: Image.Image, rng: np.random.Generator
) -> tuple[Image.Image, str]:
    return ImageEnhance.Brightness(image.convert("RGB")).enhance((1.6, 2.5)[severity]), "PNG"


def blank(image: Image.Image, severity: int, foreign: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    """Contrast cut to 15 % (mild), or one flat colour, the image's mean (strong)."""
    return ImageEnhance.Contrast(image.convert("RGB")).enhance((0.15, 0.0)[severity]), "PNG"


def text(image: Image.Image, severity: int, foreign: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    """A crop of printed text, blended half over the image (mild) or alone (strong)."""
    page = text_crops(1, rng, image.width)[0].convert("RGB")
    return (Image.blend(image.convert("RGB"), page, 0.5) if severity == 0 else page), "PNG"


def other(image: Image.Image, severity: int, foreign: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    """Foreign content in place of the image (both severities alike)."""
    return foreign.convert("RGB").resize(image.size), "PNG"


KINDS: dict[str, Make] = {
    "pasted object": pasted,
    "noise": noise,
    "blur": blur,
    "JPEG": compressed,
    "over-exposed": exposed,
    "blank": blank,
    "text": text,
    "other content": other,
}


def encode(image: Image.Image, fmt: str | tuple[str, int]) -> bytes:
    sink = io.BytesIO()
    if isinstance(fmt, tuple):
        image.save(sink, fmt[0], quality=fmt[1])
    else:
        image.save(sink, fmt)
    return sink.getvalue()


def pretrain(images: list[Image.Image], folder: Path, epochs: int) -> str:
    """The demo's small MAE from its random init, trained on `images` with the demo's recipe; its model folder."""
    from pipeline.demo import DemoConfig, random_init, train_small
    from pipeline.layout import MODEL_DIR

    train_dir = folder / "train"
    train_dir.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        image.save(train_dir / f"{i:05d}.png")
    train_small(train_dir, folder / "pretrain", random_init(folder / "init", 0), DemoConfig(epochs=epochs), 0)
    return str(folder / "pretrain" / MODEL_DIR)


def score(model: str, images: list[bytes], seed: int) -> dict[str, np.ndarray]:
    """The job's model stage on encoded images: embeddings [N, D] and losses with 1 and 4 masks [N]."""
    paths = [f"image-{i:05d}" for i in range(len(images))]
    out: dict[str, np.ndarray] = {}
    for samples in (1, 4):
        embeddings, losses = embed_encoded(Embedder(model, InferConfig(0.75, samples, seed), Storage()), paths, images)
        out[f"loss K={samples}"] = losses.astype(np.float64)
        out["embedding"] = embeddings.astype(np.float64)
    return out


def knn_distance(embeddings: np.ndarray, centre: bool) -> np.ndarray:
    """Mean cosine distance of each row to its K nearest other rows (centred first: the rows' mean subtracted)."""
    vectors = embeddings - embeddings.mean(axis=0) if centre else embeddings
    nearest = -np.partition(-similarities(vectors), K, axis=1)[:, :K]
    return 1.0 - nearest.mean(axis=1)


def robust_z(values: np.ndarray) -> np.ndarray:
    """(value - median) / (1.4826 x median absolute deviation): a score on every set's own scale."""
    median = np.median(values)
    spread = 1.4826 * np.median(np.abs(values - median))
    return (values - median) / max(spread, 1e-12)


def all_scores(loss1: np.ndarray, loss4: np.ndarray, embeddings: np.ndarray) -> dict[str, np.ndarray]:
    """Every score and fused rule of one scored set; higher is more anomalous."""
    knn, centred = knn_distance(embeddings, False), knn_distance(embeddings, True)
    mean_rank = (descending_ranks(loss4) + descending_ranks(knn)) / 2  # `vitmae anomalies --by both`
    return {
        "loss K=1": loss1,
        "loss K=4": loss4,
        "knn": knn,
        "knn centred": centred,
        "rank mean": -mean_rank,
        "loss |z|": np.abs(robust_z(loss4)),  # a loss far below the others' is as unusual as one far above
        "max z": np.maximum(robust_z(loss4), robust_z(knn)),
        "sum z": robust_z(loss4) + robust_z(knn),
        "max |z|": np.maximum(np.abs(robust_z(loss4)), robust_z(knn)),
        "max z centred": np.maximum(robust_z(loss4), robust_z(centred)),
    }


def auroc(scores: np.ndarray, anomalous: np.ndarray) -> float:
    """Area under the ROC curve: the chance that an anomaly scores above a normal image (ties count half)."""
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    positives, negatives = anomalous.sum(), (~anomalous).sum()
    return float((ranks[anomalous].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def precision(scores: np.ndarray, anomalous: np.ndarray) -> float:
    """Share of anomalies among the top n, n the number of anomalies (ties broken by position)."""
    n = int(anomalous.sum())
    return float(anomalous[np.argsort(-scores, kind="stable")[:n]].mean())


def evaluate_set(
    name: str, normals: list[Image.Image], foreign: list[Image.Image], models: dict[str, str], seeds: int
) -> dict[tuple[str, str, str], list[tuple[float, float]]]:
    """(model, kind/severity, score) -> [(AUROC, precision) per seed]."""
    results: dict[tuple[str, str, str], list[tuple[float, float]]] = {}
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(normals))
        held = [normals[i] for i in order[:HELD_OUT]]
        sources = [normals[i] for i in order[HELD_OUT:]]  # made into anomalies: held-out images not scored as normal
        cases = [(kind, severity) for kind in KINDS for severity in (0, 1)]
        files = [encode(image, "PNG") for image in held]
        for kind, severity in cases:
            for _j in range(PER_KIND):
                source = sources[rng.integers(len(sources))]
                image, fmt = KINDS[kind](source, severity, foreign[rng.integers(len(foreign))], rng)
                files.append(encode(image, fmt))
        for model_name, model in models.items():
            scored = score(model, files, seed)
            for c, (kind, severity) in enumerate(cases):
                rows = np.r_[np.arange(HELD_OUT), HELD_OUT + c * PER_KIND + np.arange(PER_KIND)]
                anomalous = np.r_[np.zeros(HELD_OUT, bool), np.ones(PER_KIND, bool)]
                every = all_scores(scored["loss K=1"][rows], scored["loss K=4"][rows], scored["embedding"][rows])
                case = f"{kind}, {('mild', 'strong')[severity]}"
                for score_name, values in every.items():
                    results.setdefault((model_name, case, score_name), []).append(
                        (auroc(values, anomalous), precision(values, anomalous))
                    )
            logger.info("%s: seed %d scored with the %s model", name, seed, model_name)
    return results


def report(name: str, results: dict[tuple[str, str, str], list[tuple[float, float]]]) -> None:
    """Per model: AUROC per case (mean over seeds), then mean AUROC, worst case and mean precision per score."""
    for model in dict.fromkeys(key[0] for key in results):
        cases = list(dict.fromkeys(key[1] for key in results if key[0] == model))
        print(f"\n{name}, {model} model: AUROC, mean of {len(results[(model, cases[0], SCORES[0])])} seeds")
        print(f"| kind | {' | '.join(SCORES)} |")
        print("| --- |" + " ---: |" * len(SCORES))
        for case in cases:
            cells = [np.mean([a for a, _ in results[(model, case, s)]]) for s in SCORES]
            print(f"| {case} | " + " | ".join(f"{cell:.3f}" for cell in cells) + " |")
        print(
            "| **mean AUROC** (std over seeds) | "
            + " | ".join(summary(results, model, cases, s, 0) for s in SCORES)
            + " |"
        )
        print(
            "| worst kind's AUROC | "
            + " | ".join(f"{min(np.mean([a for a, _ in results[(model, c, s)]]) for c in cases):.3f}" for s in SCORES)
            + " |"
        )
        print(
            f"| **mean precision at {PER_KIND}** | "
            + " | ".join(summary(results, model, cases, s, 1) for s in SCORES)
            + " |"
        )


def summary(results: dict, model: str, cases: list[str], score_name: str, metric: int) -> str:
    """Mean over cases, and its standard deviation over seeds."""
    per_seed = np.array([[r[metric] for r in results[(model, case, score_name)]] for case in cases]).mean(axis=0)
    return f"{per_seed.mean():.3f} ({per_seed.std():.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True, help="where the training images and models go")
    parser.add_argument("--seeds", type=int, default=3, help="scored sets per kind: anomalies and masks drawn again")
    parser.add_argument("--epochs", type=int, default=20, help="pre-training epochs (the demo's)")
    parser.add_argument("--sets", default="digits,photographs", help="which sets, comma-separated")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    print(hardware())
    rng = np.random.default_rng(1234)
    for name in args.sets.split(","):
        if name == "digits":
            normals, foreign = digits(), crops(PHOTOS + FOREIGN, 64, rng, 32)
        else:
            normals, foreign = crops(PHOTOS, 1800, rng), crops(FOREIGN, 64, rng)
        # Train on the images no seed scores or corrupts: the first third after a fixed shuffle stays out.
        order = np.random.default_rng(99).permutation(len(normals))
        scored_pool = [normals[i] for i in order[: HELD_OUT + 200]]
        training = [normals[i] for i in order[HELD_OUT + 200 :]]
        folder = args.workdir / name
        models = {"trained": pretrain(training, folder, args.epochs)}
        from pipeline.demo import random_init

        models["random-weight"] = random_init(folder / "random", 1)
        report(name, evaluate_set(name, scored_pool, foreign, models, args.seeds))


if __name__ == "__main__":
    main()
