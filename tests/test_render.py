"""Rendering under real EGL, filmed and replayed episodes, and the video files the commands write."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import imageio_ffmpeg
import numpy as np
import pytest
from onnx_helpers import small_actor, write_policy

from awac_robot import gl
from awac_robot.cli import main
from awac_robot.collect import CollectConfig, collect
from awac_robot.control.limits import default_config
from awac_robot.control.runlog import load_log
from awac_robot.control.supervisor import CONTROLLER_LOG, ROBOT_LOG, Supervisor
from awac_robot.envs import TaskError, get_spec, make_env
from awac_robot.filming import filmed_rollout
from awac_robot.gl import RenderError, probe
from awac_robot.replay import ReplayError, replay_deployment, replay_episodes
from awac_robot.rollout import FunctionActor, rollout
from awac_robot.store import DemoStore, Episode
from awac_robot.video import BAR, write_video

_GL_ERRORS = {backend: probe(backend) for backend in ("egl", "osmesa")}
needs_gl = pytest.mark.skipif(
    all(_GL_ERRORS.values()),
    reason=f"no OpenGL at all on this machine (egl: {_GL_ERRORS['egl']}; osmesa: {_GL_ERRORS['osmesa']})",
)


def sine_actor(act_dim: int) -> FunctionActor:
    """An open-loop wiggle: moves the robot visibly, deterministic in the observation."""
    return FunctionActor(lambda obs: np.sin(np.arange(act_dim) + 10 * obs[:act_dim].sum()).astype(np.float32))


@pytest.fixture(scope="module")
def push_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("render") / "push.zarr"
    collect(CollectConfig(task="push", episodes=2, store=path, noise=0.1, seed=5, progress=False))
    return path


@needs_gl
def test_frames_are_real_pictures_and_filming_changes_nothing() -> None:
    env = make_env("push", render_mode="rgb_array", size=96)
    plain = make_env("push")
    actor = sine_actor(env.config.act_dim)
    try:
        filmed = filmed_rollout(env, actor, 3, "push")
        unfilmed = rollout(plain, actor, 3)
    finally:
        env.close()
        plain.close()
    np.testing.assert_array_equal(filmed.episode.obs, unfilmed.obs)
    np.testing.assert_array_equal(filmed.episode.action, unfilmed.action)
    # push runs at 25 Hz: every step is a frame, plus the reset
    assert len(filmed.frames) == unfilmed.length + 1 and filmed.fps == pytest.approx(25.0)
    first, last = filmed.frames[0], filmed.frames[-1]
    assert first.shape == (96 + BAR, 96, 3) and first.dtype == np.uint8
    assert first[BAR:].std() > 10  # a scene, not a blank buffer
    assert np.abs(first[BAR:].astype(int) - last[BAR:]).mean() > 0.5  # the arm moved


@needs_gl
def test_fast_tasks_keep_real_time_frames_only() -> None:
    env = make_env("door", render_mode="rgb_array", size=32)
    try:
        filmed = filmed_rollout(env, sine_actor(env.config.act_dim), 0, "door", on_step=lambda step: step.index == 9)
    finally:
        env.close()
    # door runs at 100 Hz; at 25 fps every 4th observation is kept, and the one that ends the episode
    assert filmed.episode.length == 10 and filmed.fps == pytest.approx(25.0)
    assert len(filmed.frames) == 4


def test_rendering_needs_a_render_mode() -> None:
    with pytest.raises(TaskError, match="unknown render mode 'human'"):
        make_env("reach", render_mode="human")
    env = make_env("reach")
    env.reset(seed=0)
    with pytest.raises(RenderError, match="made without render_mode='rgb_array'"):
        env.render()


@needs_gl
def test_replay_reproduces_stored_episodes_bit_for_bit(push_store: Path) -> None:
    checked = replay_episodes(push_store, [1, 0])
    assert [r.index for r in checked] == [1, 0] and all(r.film is None for r in checked)
    for result in checked:
        assert result.check.exact and result.check.max_obs_diff == 0.0
        assert "matches the store exactly" in result.check.describe()
    filmed = replay_episodes(push_store, [0], size=64)[0]
    assert filmed.check.exact and len(filmed.film.frames) == filmed.stored.length + 1


def test_replay_says_when_the_store_disagrees_with_the_simulator(push_store: Path, tmp_path: Path) -> None:
    stored = next(DemoStore.open(push_store).episodes())
    wrong = tmp_path / "wrong.zarr"
    with DemoStore.create(wrong, get_spec("push")) as store:
        fields = {k: getattr(stored, k) for k in ("obs", "action", "reward", "terminated", "truncated", "success")}
        store.append(Episode(**fields, source="scripted", seed=stored.seed + 1))  # another start than recorded
        store.append(Episode(**fields, source="imported:x"))
    result = replay_episodes(wrong, [0])[0]
    assert not result.check.exact and result.check.first_diff_step == 0 and result.check.max_obs_diff > 1e-3
    assert "DIFFERS from the store" in result.check.describe() and "mujoco 3.11.0" in result.check.describe()
    assert main(["replay", str(wrong), "--episode", "0"]) == 1
    with pytest.raises(ReplayError, match="episode 1 .* has no reset seed"):
        replay_episodes(wrong, [1])
    with pytest.raises(ReplayError, match="has 2 episodes .*no episode 2"):
        replay_episodes(wrong, [2])


@needs_gl
def test_replay_command_writes_mp4_gif_and_contact_sheet(
    push_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    length = DemoStore.open(push_store).episode_meta()["length"].tolist()
    video, gif, sheet = tmp_path / "push.mp4", tmp_path / "push.gif", tmp_path / "sheet.png"
    argv = ["replay", str(push_store), "--episode", "0", "1", "--size", "64"]
    assert main([*argv, "--video", str(video)]) == 0
    assert main(["replay", str(push_store), "--episode", "1", "--size", "64", "--video", str(gif)]) == 0
    assert main([*argv, "--grid", str(sheet), "--columns", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count("replay matches the store exactly") == 5 and f"wrote {video} ({sum(length) + 2} frames" in out

    reader = imageio_ffmpeg.read_frames(str(video))
    meta = next(reader)
    frames = list(reader)
    assert meta["size"] == (64, 64 + BAR) and meta["fps"] == pytest.approx(25.0)
    assert len(frames) == sum(length) + 2
    gif_frames = iio.imread(gif, index=None)
    assert gif_frames.shape[0] == length[1] + 1 and gif_frames.shape[1:3] == (64 + BAR, 64)
    picture = iio.imread(sheet)
    assert picture.shape == (2 * (64 + BAR + 4) + 4, 3 * (64 + 4) + 4, 3)


@needs_gl
def test_render_command_writes_a_picture(tmp_path: Path) -> None:
    out = tmp_path / "reach.png"
    assert main(["render", "--task", "reach", "--out", str(out), "--size", "128"]) == 0
    picture = iio.imread(out)
    assert picture.shape == (128 + BAR, 128, 3) and picture[BAR:].std() > 10


def test_bad_picture_and_video_requests_are_one_line_errors(
    push_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["render", "--task", "reach", "--out", str(tmp_path / "x.bmp")]) == 2
    assert main(["render", "--task", "reach", "--size", "7"]) == 2
    assert main(["replay", str(push_store), "--episode", "0", "--video", str(tmp_path / "x.avi")]) == 2
    assert main(["replay", str(push_store), "--episode", "9"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 4 and "must end in .png or .jpg or .jpeg" in err[0] and "even number of pixels" in err[1]
    assert "must end in .mp4 or .gif" in err[2] and "no episode 9" in err[3]
    with pytest.raises(RenderError, match="no frames"):
        write_video(tmp_path / "empty.mp4", [], 25)
    assert not list(tmp_path.iterdir())


@needs_gl
@pytest.mark.parametrize("task", ["door", pytest.param("kitchen", marks=pytest.mark.slow)])
def test_unclosed_rendering_envs_free_their_gl_context_before_exit(task: str) -> None:
    script = (
        "import atexit\n"
        "from awac_robot.envs import make_env\n"
        "def report():  # registered first, so it runs after every other exit handler, MuJoCo's EGL teardown too\n"
        "    sim = env.unwrapped\n"
        "    viewers = getattr(sim, 'robot_env', sim).mujoco_renderer._viewers.values()\n"
        "    print('freed', len(viewers), all(v.opengl_context._context is None for v in viewers))\n"
        "atexit.register(report)\n"
        f"env = make_env({task!r}, render_mode='rgb_array', size=32)\n"
        "env.reset(seed=0)\n"
        "env.render()\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "freed 1 True"
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr


def test_a_broken_gl_backend_is_named_with_its_fix(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MUJOCO_GL", "nonsense")
    assert main(["render", "--task", "reach", "--size", "32"]) == 2
    assert capsys.readouterr().err.strip() == (
        "awac-robot render: error: MUJOCO_GL='nonsense' is not a MuJoCo backend: use one of glfw, egl, osmesa"
    )
    # a headless machine has no GLFW: asking for it explicitly fails with what it needs, and no fallback
    monkeypatch.setenv("MUJOCO_GL", "glfw")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(gl, "_chosen", None)
    with pytest.raises(RenderError, match=r"MUJOCO_GL=glfw cannot render here \(.+\); it needs a display"):
        gl.ensure_backend()
    assert gl._chosen is None


@pytest.fixture(scope="module")
def door_deployment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One second of a random door policy on the real controller and robot processes, seed 1."""
    root = tmp_path_factory.mktemp("deploy")
    spec = get_spec("door")
    policy = write_policy(small_actor(spec), spec, root / "door.onnx")
    Supervisor(policy, default_config(spec), 1.0, root / "run", seed=1, out=sys.stderr).run()
    return root / "run"


def test_a_deployment_replays_exactly_from_the_robot_record(door_deployment: Path) -> None:
    columns, meta = load_log(door_deployment / ROBOT_LOG)
    assert meta["seed"] == 1 and len(columns["sim_step"]) > 50
    assert np.abs(columns["applied"] - columns["applied"].astype(np.float32)).max() > 0  # float64 commands
    replayed = replay_deployment(door_deployment)
    assert sum(r.steps for r in replayed) == len(columns["sim_step"])
    assert all(r.check.exact and r.check.max_obs_diff == 0.0 for r in replayed)


@needs_gl
def test_replay_log_writes_the_deployment_video(
    door_deployment: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    video = tmp_path / "deploy.mp4"
    assert main(["replay", "--log", str(door_deployment), "--video", str(video), "--size", "64"]) == 0
    out = capsys.readouterr().out
    assert "matches the robot record exactly" in out
    steps = load_log(door_deployment / ROBOT_LOG)[0]["sim_step"].size
    # door is filmed every 4th step (25 fps of 100 Hz) plus the last step of the run
    expected = len(range(0, steps + 1, 4)) + (1 if steps % 4 else 0)
    reader = imageio_ffmpeg.read_frames(str(video))
    assert next(reader)["size"] == (64, 64 + BAR) and len(list(reader)) == expected


def test_replay_log_says_when_the_record_does_not_replay(door_deployment: Path, tmp_path: Path) -> None:
    tampered = tmp_path / "robot.runlog"
    data = (door_deployment / ROBOT_LOG).read_bytes()
    assert data.count(b'"seed": 1,') == 1
    tampered.write_bytes(data.replace(b'"seed": 1,', b'"seed": 2,'))  # another start than the robot had
    assert main(["replay", "--log", str(tampered)]) == 1
    with pytest.raises(ReplayError, match="records no seed or no applied commands"):
        replay_deployment(door_deployment / CONTROLLER_LOG)
    assert main(["replay", "--log", str(tmp_path / "missing")]) == 2
    assert main(["replay", str(tmp_path), "--log", str(door_deployment)]) == 2
