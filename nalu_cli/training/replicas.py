"""What one model trains on: its initialisation seed, its task and its training-data stream."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nalu_cli import tasks
from nalu_cli.config import Config


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

    @classmethod
    def with_restarts(cls, config: Config, seed: int) -> list["Replica"]:
        return [cls.for_seed(config, seed, restart) for restart in range(config.model.restart_count)]
