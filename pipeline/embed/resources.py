"""The model stage's size on the cluster: how many actors, torch threads each and images a batch.

Read from the Ray cluster the run joined or started (`pipeline.embed.run`): its GPUs, CPUs and memory.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from pipeline.embed.infer import cpu_has_bf16
from pipeline.storage import is_local
from vitmae.config import DTYPE_BYTES, dtype_name
from vitmae.errors import InvalidInput

if TYPE_CHECKING:
    from pipeline.embed.run import EmbedConfig

logger = logging.getLogger(__name__)


def check_cluster(config: EmbedConfig) -> int:
    """The number of GPU actors; refuses more GPUs than the cluster has, warns of local paths on several nodes."""
    available = int(ray.cluster_resources().get("GPU", 0))
    if config.num_gpus is not None and config.num_gpus > available:
        raise InvalidInput(
            f"num_gpus {config.num_gpus} asks for more GPUs than the Ray cluster's {available} (start the GPU "
            "nodes first, or give --num_gpus 0 to run on CPUs)"
        )
    local = [uri for uri in (config.input, config.input_list, config.output, config.model) if uri and is_local(uri)]
    if local and len([node for node in ray.nodes() if node["Alive"]]) > 1:
        logger.warning("%s: local paths must be on storage that every node of the cluster mounts", ", ".join(local))
    return config.num_gpus if config.num_gpus is not None else available


def cpus_have_bf16() -> bool:
    """Whether the CPUs of every node that can hold a CPU actor multiply bf16 natively (`cpu_has_bf16`): this node's
    read here, each other node's by a task pinned to it (holding no CPU)."""
    nodes = [node["NodeID"] for node in ray.nodes() if node["Alive"] and node["Resources"].get("CPU", 0) > 0]
    here = ray.get_runtime_context().get_node_id()
    if here in nodes and not cpu_has_bf16():
        return False
    ask = ray.remote(num_cpus=0)(cpu_has_bf16)
    pinned = [NodeAffinitySchedulingStrategy(node, soft=False) for node in nodes if node != here]
    return all(ray.get([ask.options(scheduling_strategy=strategy).remote() for strategy in pinned]))


# Beside its weights, a CPU model actor holds torch and Ray and a batch's activations (about the weights' size for
# ViT-B at 8 images, twice that with 4 loss masks; measured in benchmarks/RESULTS.md).
_ACTOR_BASE_BYTES = 2**30


def cpu_actors(config: EmbedConfig, parameters: int) -> tuple[int, int]:
    """Model actors, and torch threads each, on a cluster without GPUs.

    Each CPU actor holds one Ray CPU, and Ray Data fuses the decode stage into it, so the actor decodes its
    batches and then runs the model, both on its threads. By default there is one actor per CPU with one
    thread each: independent actors keep every core busy, where the threads of one actor wait for each other
    at every operation and all stall when one core is taken (benchmarks/RESULTS.md). Only as many actors start
    as half the cluster's memory holds (their weights, twice, and 1 GB each), the CPUs shared between them.
    """
    resources = ray.cluster_resources()
    cpus = max(1, int(resources.get("CPU", 1)))
    actors = config.num_actors
    if actors is None:
        itemsize = DTYPE_BYTES[dtype_name(config.infer.resolved_dtype(gpu=False))]
        fit = int(resources.get("memory", 0) / 2 // (_ACTOR_BASE_BYTES + 2 * parameters * itemsize))
        actors = max(1, min(cpus // (config.cpu_threads or 1), fit))
    return actors, config.cpu_threads or max(1, cpus // actors)


def batch_size_for(gpus: int) -> int:
    """The default batch: 256 images on GPUs, where ViT-B runs as fast per image at 128 as at 1024 and a batch goes
    over in two slices; on CPUs 8, which the model runs as fast per image as 32, and with which the actors' last
    batches end closer together (benchmarks/RESULTS.md)."""
    return 256 if gpus else 8
