"""An episode on film: the shared rollout with the env filming, each frame captioned and success marked.

Filming only reads the simulator, so a filmed episode is the same episode as an unfilmed
one with the same seed (tests/test_render.py checks it). Frames are kept at the rate that
plays back in real time (`video.frame_stride`), so a door episode renders 51 frames, not 201.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from awac_robot.envs import Film, TaskEnv
from awac_robot.rollout import Actor, rollout
from awac_robot.store import Episode
from awac_robot.video import frame_stride, label


@dataclass
class FilmedEpisode:
    episode: Episode
    frames: list[np.ndarray]
    #: playback rate at which the frames run in real time
    fps: float


def filmed_rollout(env: TaskEnv, actor: Actor, seed: int, caption: str, **rollout_kwargs: Any) -> FilmedEpisode:
    """`rollout(env, actor, seed, ...)` while filming; `caption` heads every frame (the step number is added)."""
    return film_episode(env, lambda: rollout(env, actor, seed, **rollout_kwargs), caption)


def film_episode(env: TaskEnv, run: Callable[[], Episode], caption: str) -> FilmedEpisode:
    """Film whatever one episode `run` steps `env` through (it returns that episode), at the real-time rate."""
    every = frame_stride(env.config.control_period)
    with env.filming(every) as film:
        episode = run()
    if film.steps[-1] != episode.length:  # the end of the episode is always shown
        film.frames.append(env.render())
        film.steps.append(episode.length)
    return FilmedEpisode(episode, label_film(film, episode, caption), 1.0 / (env.config.control_period * every))


def label_film(film: Film, episode: Episode, caption: str) -> list[np.ndarray]:
    """Caption each frame; from the step the task is first solved on, the frame says "solved".

    The last frame of an episode that was never solved says "not solved".
    """
    solved_steps = np.flatnonzero(episode.success)
    first_solved = int(solved_steps[0]) + 1 if solved_steps.size else None  # success[t] is after action t
    labelled = []
    for j, (frame, step) in enumerate(zip(film.frames, film.steps, strict=True)):
        solved: bool | None = None
        if first_solved is not None and step >= first_solved:
            solved = True
        elif first_solved is None and j == len(film.frames) - 1:
            solved = False
        labelled.append(label(frame, f"{caption}  step {step}/{episode.length}", solved))
    return labelled
