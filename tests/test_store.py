"""The Zarr demo store on a real disk: layout, atomic appends under SIGKILL, locking, compatibility checks.

Run as a script (`python tests/test_store.py STORE FIRST_SEED`) this file is the writer the
kill test starts and kills: it appends deterministic episodes forever.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from awac_robot import __version__
from awac_robot.envs import get_spec
from awac_robot.spec import SpecMismatch
from awac_robot.store import FORMAT_VERSION, DemoStore, Episode, StoreError

SPEC = get_spec("door")


def make_episode(seed: int, source: str = "scripted") -> Episode:
    """A deterministic episode whose every number depends on `seed`, so any torn or mixed write shows."""
    rng = np.random.default_rng(seed)
    steps = int(rng.integers(20, 260))
    success = np.zeros(steps, dtype=bool)
    success[rng.integers(steps) :] = seed % 3 == 0
    terminated = np.zeros(steps, dtype=bool)
    truncated = np.zeros(steps, dtype=bool)
    (terminated if seed % 4 == 0 else truncated)[-1] = True
    return Episode(
        obs=rng.normal(size=(steps + 1, SPEC.obs_dim)),
        action=rng.uniform(-1, 1, size=(steps, SPEC.act_dim)),
        reward=np.where(success, 0.0, -1.0),
        terminated=terminated,
        truncated=truncated,
        success=success,
        source=source,
        seed=seed,
    )


def assert_same_episode(got: Episode, want: Episode) -> None:
    for name in ("obs", "action", "reward", "terminated", "truncated", "success"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    assert (got.source, got.seed) == (want.source, want.seed)


def verify_store(path: Path) -> int:
    """Every published episode equals the one its seed generates; returns how many there are."""
    store = DemoStore.open(path)
    episodes = list(store.episodes())
    for episode in episodes:
        assert_same_episode(episode, make_episode(episode.seed))
    assert [e.seed for e in episodes] == list(range(len(episodes)))
    return len(episodes)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "demos.zarr"


def test_round_trip_layout_and_transitions(store_path: Path) -> None:
    episodes = [make_episode(0), make_episode(1, "human"), make_episode(2, "online")]
    with DemoStore.create(store_path, SPEC) as store:
        for episode in episodes:
            store.append(episode, spec=SPEC)
    store = DemoStore.open(store_path)
    lengths = [e.length for e in episodes]
    assert store.num_episodes == 3 and store.num_steps == sum(lengths)

    meta = store.episode_meta()
    assert meta["source"].tolist() == ["scripted", "human", "online"]
    assert meta["seed"].tolist() == [0, 1, 2]
    assert meta["length"].tolist() == lengths
    np.testing.assert_allclose(meta["return"], [e.total_return for e in episodes])
    assert meta["success"].tolist() == [e.solved for e in episodes]

    data = store.load_transitions()
    assert data.num_episodes == 3 and data.load_seconds > 0
    for name in ("obs", "action", "reward", "next_obs", "terminal"):
        array = getattr(data, name)
        assert array.dtype == np.float32 and array.flags.c_contiguous, name
    np.testing.assert_array_equal(data.obs, np.concatenate([e.obs[:-1] for e in episodes]))
    # next_obs is exact on every step, including each episode's last (the stored final observation)
    np.testing.assert_array_equal(data.next_obs, np.concatenate([e.obs[1:] for e in episodes]))
    np.testing.assert_array_equal(data.terminal, np.concatenate([e.terminated for e in episodes]).astype(np.float32))
    assert data.terminal.sum() == 1  # seed 0 terminated; seeds 1 and 2 were truncated, which is not terminal

    human = store.load_transitions(sources=["human"])
    np.testing.assert_array_equal(human.next_obs, episodes[1].obs[1:])
    np.testing.assert_array_equal(human.action, episodes[1].action)
    with pytest.raises(StoreError, match="no episodes from policy"):
        store.load_transitions(sources=["policy"])


def test_open_reader_sees_episodes_published_after_it_opened(store_path: Path) -> None:
    writer = DemoStore.create(store_path, SPEC)
    writer.append(make_episode(0))
    reader = DemoStore.open(store_path)
    writer.append(make_episode(1))
    assert reader.num_episodes == 1  # a snapshot until asked again
    assert len(reader.load_transitions()) == make_episode(0).length + make_episode(1).length
    assert reader.num_episodes == 2 and reader.episode_meta()["seed"].tolist() == [0, 1]
    writer.close()


def test_on_disk_format_is_plain_zarr(store_path: Path) -> None:
    """Another tool reading with zarr alone finds the documented layout, attributes and codecs."""
    with DemoStore.create(store_path, SPEC, reward_mode="sparse") as store:
        store.append(make_episode(3))
    root = zarr.open_group(store_path, mode="r")
    attrs = dict(root.attrs)
    assert attrs["format_version"] == FORMAT_VERSION and attrs["task"] == "door"
    assert attrs["reward_mode"] == "sparse" and attrs["awac_robot_version"] == __version__
    assert attrs["spec"]["obs_dim"] == 39 and attrs["created_utc"].startswith("20")
    episode = make_episode(3)
    assert root["meta/episode_ends"][:].tolist() == [episode.length]
    np.testing.assert_array_equal(root["data/obs"][:], episode.obs[:-1])
    np.testing.assert_array_equal(root["meta/final_obs"][0], episode.obs[-1])
    for key in ("data/obs", "data/action", "data/reward", "data/success"):
        array = root[key]
        assert array.shape[0] == episode.length  # trimmed to the published length on close
        chunk_bytes = np.prod(array.chunks) * array.dtype.itemsize
        assert 0.9e6 <= chunk_bytes <= 4.2e6 and array.chunks[1:] == array.shape[1:], key
        blosc = json.loads((store_path / key / "zarr.json").read_text())["codecs"][-1]
        assert blosc["name"] == "blosc" and blosc["configuration"]["cname"] == "zstd"
        assert blosc["configuration"]["shuffle"] == "shuffle"


def test_wrong_episode_is_refused_and_writes_nothing(store_path: Path) -> None:
    with DemoStore.create(store_path, SPEC) as store:
        store.append(make_episode(0))
    before = {p: p.read_bytes() for p in store_path.rglob("*") if p.is_file() and p.name != "writer.lock"}
    good = make_episode(1)
    with DemoStore.open(store_path, mode="a") as store:
        with pytest.raises(SpecMismatch, match="name is 'pen'"):
            store.append(good, spec=get_spec("pen"))
        with pytest.raises(SpecMismatch, match="obs_dim 30"):
            store.append(Episode(**{**vars(good), "obs": good.obs[:, :30]}))
        with pytest.raises(StoreError, match="not sparse"):
            store.append(Episode(**{**vars(good), "reward": good.reward * 2}))
        with pytest.raises(StoreError, match="NaN"):
            store.append(Episode(**{**vars(good), "action": np.full_like(good.action, np.nan)}))
        with pytest.raises(StoreError, match="actions leave the task's bounds"):
            store.append(Episode(**{**vars(good), "action": good.action * 1.5}))
        with pytest.raises(StoreError, match="unknown episode source"):
            store.append(Episode(**{**vars(good), "source": "robot"}))
        with pytest.raises(StoreError, match="incl. the final one"):
            Episode(**{**vars(good), "obs": good.obs[:-1]})
    after = {p: p.read_bytes() for p in store_path.rglob("*") if p.is_file() and p.name != "writer.lock"}
    assert after == before
    assert DemoStore.open(store_path).num_episodes == 1


def test_create_and_open_or_create_check_the_target(store_path: Path) -> None:
    DemoStore.create(store_path, SPEC).close()
    with pytest.raises(StoreError, match="already exists"):
        DemoStore.create(store_path, SPEC)
    with pytest.raises(SpecMismatch, match="store .* was made for a different task"):
        DemoStore.open_or_create(store_path, get_spec("pen"))
    with pytest.raises(SpecMismatch, match="records sparse rewards, not dense"):
        DemoStore.open_or_create(store_path, SPEC, reward_mode="dense")
    with DemoStore.open_or_create(store_path, SPEC) as store:  # the failed attempts released the lock
        store.append(make_episode(0))
    with pytest.raises(StoreError, match="read-only"):
        DemoStore.open(store_path).append(make_episode(1))


def test_torn_publish_is_ignored_then_trimmed(store_path: Path) -> None:
    """The exact state a writer killed between growing episode_ends and writing its value leaves."""
    with DemoStore.create(store_path, SPEC) as store:
        store.append(make_episode(0))
    length = make_episode(0).length
    root = zarr.open_group(store_path, mode="r+")
    root["data/obs"].resize((length + 50, SPEC.obs_dim))
    root["data/obs"][length:] = 7.0
    root["meta/episode_ends"].resize((2,))  # grown, value never written (fill value 0)

    assert DemoStore.open(store_path).num_episodes == 1
    with DemoStore.open(store_path, mode="a") as store:
        store.append(make_episode(1))
    assert verify_store(store_path) == 2
    assert zarr.open_group(store_path, mode="r")["data/obs"].shape[0] == length + make_episode(1).length


def test_bad_stores_fail_with_one_line(tmp_path: Path, store_path: Path) -> None:
    def one_line_error(path: Path, match: str) -> None:
        with pytest.raises((StoreError, FileNotFoundError), match=match) as info:
            DemoStore.open(path).load_transitions()
        assert "\n" not in str(info.value)

    (tmp_path / "plain").mkdir()
    one_line_error(tmp_path / "plain", "not a demo store")
    one_line_error(tmp_path / "nowhere", "no store at")
    zarr.open_group(tmp_path / "other.zarr", mode="w").attrs["x"] = 1
    one_line_error(tmp_path / "other.zarr", "not an awac-robot demo store")

    with DemoStore.create(store_path, SPEC) as store:
        store.append(make_episode(0))
    root_json = store_path / "zarr.json"
    original = root_json.read_text()
    newer = json.loads(original)
    newer["attributes"]["format_version"] = FORMAT_VERSION + 1
    root_json.write_text(json.dumps(newer))
    one_line_error(store_path, "format version 2 .*upgrade awac-robot")
    root_json.write_text(original)

    chunk = store_path / "data" / "action" / "c" / "0" / "0"
    chunk.write_bytes(chunk.read_bytes()[:40])
    one_line_error(store_path, "array data/action is corrupt")
    (store_path / "data" / "terminated" / "c" / "0").unlink()  # all False, still a chunk file: its loss shows
    one_line_error(store_path, r"data/terminated/c/0 \(rows 0-\d+ of data/terminated\) is missing")
    (store_path / "meta" / "seed" / "zarr.json").unlink()
    one_line_error(store_path, "missing array meta/seed")


def _start_writer(path: Path, first_seed: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, str(path), str(first_seed)], stderr=subprocess.PIPE)


def _wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting for the writer subprocess"
        time.sleep(0.01)


def _published(path: Path) -> int:
    try:
        return DemoStore.open(path).num_episodes
    except (StoreError, FileNotFoundError):
        return 0


def test_sigkill_mid_write_keeps_every_published_episode(store_path: Path) -> None:
    """A real writer process appends in a loop and is SIGKILLed at random moments, five times."""
    rng = random.Random(1234)
    DemoStore.create(store_path, SPEC).close()
    published = 0
    for _ in range(5):
        writer = _start_writer(store_path, published)
        target = published + 3
        _wait_for(lambda target=target: _published(store_path) >= target)
        # A reader reads (and checks) the store while the writer keeps appending.
        assert verify_store(store_path) >= target
        time.sleep(rng.uniform(0.0, 0.15))
        writer.send_signal(signal.SIGKILL)
        assert writer.wait(timeout=30) == -signal.SIGKILL, writer.stderr.read().decode()
        count = verify_store(store_path)
        assert count >= target
        published = count
    # The next writer finds no stale lock, trims the leftovers and continues the sequence.
    with DemoStore.open(store_path, mode="a") as store:
        store.append(make_episode(published))
    assert verify_store(store_path) == published + 1
    assert not list(store_path.rglob("*.partial"))


def test_second_writer_gets_clear_error_naming_the_holder(store_path: Path) -> None:
    DemoStore.create(store_path, SPEC).close()
    writer = _start_writer(store_path, 0)
    try:
        _wait_for(lambda: _published(store_path) >= 1)
        with pytest.raises(StoreError, match=f"already open for writing by pid {writer.pid} on"):
            DemoStore.open(store_path, mode="a")
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    DemoStore.open(store_path, mode="a").close()  # the dead holder's lock went with it


def _append_forever(path: str, first_seed: int) -> None:
    store = DemoStore.open(path, mode="a")
    seed = first_seed
    while True:
        store.append(make_episode(seed))
        seed += 1


if __name__ == "__main__":
    _append_forever(sys.argv[1], int(sys.argv[2]))
