"""The default model: a portfolio of architectures trained side by side, one model chosen.

`nalu train --op X` is not told X. Its model is chosen among several architectures, each
trained with model.restarts restarts in the same process: the one restart of any of them
with the lowest interpolation validation MSE is the model (selection never sees the
extrapolation set), and the run stops once that model meets the success criterion. Each
member covers what another cannot learn (see README, "The default model"):

static     NAU -> gated    a+b, a-b, a*b, a^2, sqrt(a)
           NAU -> NaiNPU   a/b (with a polish that holds its powers): the gated unit's affine trap
recurrent  NAU -> gated    a+b, a-b, a^2, sqrt(a), a*b on some seeds
           NAU -> NMU      a*b, a^2; its cell's recurrence held at the identity it starts from
           NAU -> NaiNPU   a/b: the recurrence held too, and a polish that holds the powers at +-1

A named unit (`--unit nau`, `model.layers`) is one architecture. No TensorFlow here.
"""

from __future__ import annotations

import dataclasses

from nalu_cli.config import Config, ModelConfig, TrainingConfig

# Per task kind: (layers, training settings of that member) for each member of the default model.
# The NaiNPU members polish holding their powers at +-1 (training.polish_hold), at steps POLISH_EVERY
# and 2 POLISH_EVERY (rounded up to a multiple of eval_every). The held polish converges within 20
# iterations where it converges (Levenberg-Marquardt near an exact fit): alone on a/b, seeds 0-19,
# 20, 30, 50, 100 and 300 iterations solved the same 20 seeds (50: the benchmark in 28 s, 300: 75 s);
# recurrent, 100 and 1,000 iterations the same 19 (README, "Division" and "The recurrent task").
POLISH_EVERY, POLISH_LIMIT = 5_000, 2
POLISH_ITERATIONS = {"static": 50, "recurrent": 100}
# The static gated member's split-adam splits its hidden units' common mode from step 1,000
# (training.hidden_split_start, training/optimizer.py): on a*b both hidden units first settle on
# (a + b) / 2 and then part so slowly that the default table's seeds were solved by a median step
# of 20,000; with the split, 3,000. Not the NaiNPU member's: with it, its polish at step 5,000 found
# a/b on 19 of the table's 20 seeds instead of 20 (README, "Split-adam"; we think because a ratio
# h1 / h2 is blind to a scale the two units share, along which their common mode then wanders).
HIDDEN_SPLIT_START = 1_000
DEFAULT_MODEL = {
    "static": ((("nau", "gated"), {"hidden_split_start": HIDDEN_SPLIT_START}),
               (("nau", "nainpu"), {"polish_every": POLISH_EVERY, "polish_iterations": POLISH_ITERATIONS["static"],
                                    "polish_limit": POLISH_LIMIT, "polish_hold": True})),
    # The NMU member's cell keeps its h_{t-1} rows at the identity (recurrent_step_scale 0), an exact
    # accumulator from the start. Learned, the recurrence let both hidden units settle on the same
    # mixture u of the two sums (y = u^2, close to a*b where the sums concentrate): restart 0 of
    # seeds 0-19 solved a*b on 3 of 20 seeds learning it, 19 of 20 holding it (README, "The recurrent task").
    "recurrent": ((("nau", "gated"), {}), (("nau", "nmu"), {"recurrent_step_scale": 0.0}),
                  # Its polish holds each power at +-1 by its sign and refits the cell (NaiNPU.structure):
                  # free, the powers settle at 0.3-0.8 on mixtures that fit T = 10 and not T = 1,000.
                  (("nau", "nainpu"), {"recurrent_step_scale": 0.0, "polish_every": POLISH_EVERY,
                                       "polish_iterations": POLISH_ITERATIONS["recurrent"],
                                       "polish_limit": POLISH_LIMIT, "polish_hold": True})),
}


def architectures(config: Config) -> list[tuple[ModelConfig, TrainingConfig]]:
    """(model, training) of each architecture the config's model trains: the default model's
    members, or the one named. A member's model names its layers, so it builds and loads alone."""
    model, training = config.model, config.training
    if not model.is_default:
        return [(model, training)]
    built = []
    for layers, settings in DEFAULT_MODEL[config.task.kind]:
        member_model = dataclasses.replace(model, unit=layers[0], layers=list(layers),
                                           restarts=model.restart_count, learn_initial_state=model.learns_initial_state)
        if training.optimizer != "split-adam":  # the hidden split is split-adam's
            settings = {key: value for key, value in settings.items() if key != "hidden_split_start"}
        if "polish_every" in settings:
            every = training.eval_every
            settings = {**settings, "polish_every": -(-settings["polish_every"] // every) * every}
        built.append((member_model, dataclasses.replace(training, **settings)))
    return built
