"""What one model trains on: its initialisation seed, its task and its training-data stream;
and what a trainer trains for a config: its members (architectures), their replicas, the groups."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nalu_cli import portfolio, tasks
from nalu_cli.config import Config, ModelConfig, TrainingConfig


@dataclass(frozen=True)
class Replica:
    """One model to train: its initialisation seed, its task, and its training-data stream."""

    init_seed: int
    spec: tasks.TaskSpec
    data_seed: int

    @classmethod
    def for_seed(cls, config: Config, seed: int, restart: int = 0) -> "Replica":
        """What `nalu train --seed seed` trains: everything derived from that one seed.

        Restart k > 0 learns the same task (slices, validation and test sets) from its own
        initialisation and data stream; restart 0 is the run without restarts.
        """
        spec = tasks.TaskSpec.from_config(config.task, seed)
        if restart == 0:
            return cls(init_seed=seed, spec=spec, data_seed=tasks.stream_key(seed, tasks.TRAIN_STREAM))
        init_seed = np.random.SeedSequence(seed, spawn_key=(tasks.RESTART_STREAM, restart)).generate_state(1)[0]
        data_seed = tasks.stream_key(seed, tasks.RESTART_STREAM, restart, tasks.TRAIN_STREAM)
        return cls(init_seed=int(init_seed) % 2**31, spec=spec, data_seed=data_seed)


@dataclass(frozen=True)
class Member:
    """What one architecture of a model trains: its layers, its training settings, its replicas."""

    model: ModelConfig
    training: TrainingConfig
    replicas: list[Replica]


def members(config: Config, seeds: list[int]) -> tuple[list[Member], list[list[int]]]:
    """The trainer's members for `seeds` (each a model of `config`) and each seed's group of replicas.

    Every architecture of the model (portfolio.architectures: one for a named unit) trains
    model.restarts restarts of each seed, numbered on from one architecture to the next, so
    every replica has its own initialisation and data stream; a seed's group is all of them,
    and its model the one with the lowest interpolation MSE.
    """
    restarts = config.model.restart_count
    architectures = portfolio.architectures(config)
    built, groups = [], [[] for _ in seeds]
    for index, (model, training) in enumerate(architectures):
        first = sum(len(member.replicas) for member in built)
        replicas = []
        for position, seed in enumerate(seeds):
            groups[position] += range(first + len(replicas), first + len(replicas) + restarts)
            replicas += [Replica.for_seed(config, seed, index * restarts + k) for k in range(restarts)]
        built.append(Member(model, training, replicas))
    return built, groups
