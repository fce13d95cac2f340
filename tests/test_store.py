"""The Zarr demo store on a real disk: layout, atomic appends under SIGKILL, locking, compatibility checks,
the self-checking publication record, provenance batches and the format-1 upgrade.

Run as a script (`python tests/test_store.py STORE FIRST_SEED`) this file is the writer the
kill test starts and kills: it appends deterministic episodes forever, two per publication.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from store_helpers import SPEC, assert_same_episode, make_episode, store_files

from awac_robot import __version__
from awac_robot.cli import main
from awac_robot.envs import get_spec
from awac_robot.provenance import Batch
from awac_robot.spec import SpecMismatch
from awac_robot.store import FORMAT_VERSION, DemoStore, Episode, StoreError

DOCS = Path(__file__).resolve().parents[1] / "docs" / "store.md"


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
        codecs = json.loads((store_path / key / "zarr.json").read_text())["codecs"]
        assert [codec["name"] for codec in codecs] == ["bytes", "blosc", "crc32c"]
        assert codecs[1]["configuration"]["cname"] == "zstd" and codecs[1]["configuration"]["shuffle"] == "shuffle"


def test_the_documented_zarr_only_reader_works(store_path: Path) -> None:
    """The snippet in docs/store.md, run as written against a store with an unpublished tail."""
    episodes = [make_episode(0), make_episode(1)]
    with DemoStore.create(store_path, SPEC) as store:
        store.append_many(episodes)
    _leave_unpublished_tail(store_path)
    snippet = re.search(r"```python\n(import numpy as np, zarr.*?)```", DOCS.read_text(), re.S).group(1)
    namespace: dict = {}
    exec(snippet.replace("demos/door.zarr", str(store_path)), namespace)
    np.testing.assert_array_equal(namespace["obs"], np.concatenate([e.obs[:-1] for e in episodes]))
    np.testing.assert_array_equal(namespace["next_obs"], np.concatenate([e.obs[1:] for e in episodes]))
    np.testing.assert_array_equal(namespace["terminal"], np.concatenate([e.terminated for e in episodes]))


def test_wrong_episode_is_refused_and_writes_nothing(store_path: Path) -> None:
    with DemoStore.create(store_path, SPEC) as store:
        store.append(make_episode(0))
    before = store_files(store_path)
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
    assert store_files(store_path) == before
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


def _leave_unpublished_tail(path: Path) -> None:
    """The state a writer killed after writing an episode's rows and end, before the record, leaves."""
    root = zarr.open_group(path, mode="r+")
    steps, episodes = root["data/obs"].shape[0], root["meta/episode_ends"].shape[0]
    for name in ("obs", "action", "reward", "terminated", "truncated", "success"):
        array = root[f"data/{name}"]
        array.resize((steps + 50, *array.shape[1:]))
        array[steps:] = 1
    for name in ("source", "seed", "length", "return", "success", "final_obs", "batch", "episode_ends"):
        root[f"meta/{name}"].resize((episodes + 1, *root[f"meta/{name}"].shape[1:]))
    root["meta/episode_ends"][episodes] = steps + 50  # a plausible end: only the record tells it is unpublished


def test_unpublished_tail_is_ignored_then_trimmed(store_path: Path) -> None:
    with DemoStore.create(store_path, SPEC) as store:
        store.append(make_episode(0))
    _leave_unpublished_tail(store_path)

    assert DemoStore.open(store_path).num_episodes == 1
    with DemoStore.open(store_path, mode="a") as store:
        store.append(make_episode(1))
    assert verify_store(store_path) == 2
    assert zarr.open_group(store_path, mode="r")["data/obs"].shape[0] == make_episode(0).length + make_episode(1).length


@pytest.mark.parametrize("damage", ["fill value", "equal to the previous", "one short", "one long"])
def test_damaged_last_episode_end_is_reported_not_trimmed(store_path: Path, damage: str) -> None:
    """Format 1 took an end <= the previous one for an unpublished tail and trimmed a published episode."""
    with DemoStore.create(store_path, SPEC) as store:
        store.append_many([make_episode(0), make_episode(1)])
    ends = DemoStore.open(store_path).episode_ends
    bad = {"fill value": 0, "equal to the previous": ends[0], "one short": ends[1] - 1, "one long": ends[1] + 1}
    zarr.open_group(store_path, mode="r+")["meta/episode_ends"][1] = bad[damage]
    before = store_files(store_path)
    for mode in ("r", "a"):
        with pytest.raises(StoreError, match="is damaged: meta/episode_ends does not match its publication") as info:
            DemoStore.open(store_path, mode=mode)
        assert "\n" not in str(info.value) and "restore the store from a copy" in str(info.value)
    assert store_files(store_path) == before  # reported, nothing repaired away
    zarr.open_group(store_path, mode="r+")["meta/episode_ends"][1] = ends[1]
    assert verify_store(store_path) == 2  # the published episode was never touched


def test_damaged_publication_record_is_reported(store_path: Path) -> None:
    with DemoStore.create(store_path, SPEC) as store:
        store.append(make_episode(0))
    root_json = store_path / "zarr.json"
    document = json.loads(root_json.read_text())
    document["attributes"]["published"]["steps"] += 1
    root_json.write_text(json.dumps(document))
    with pytest.raises(StoreError, match="does not match its publication record"):
        DemoStore.open(store_path)
    document["attributes"]["published"] = "two"
    root_json.write_text(json.dumps(document))
    with pytest.raises(StoreError, match="publication record .* is unusable"):
        DemoStore.open(store_path)


def test_a_flipped_byte_in_a_chunk_is_reported(store_path: Path) -> None:
    """Every chunk carries a CRC-32C: a flipped bit is an error, not a silently different number."""
    with DemoStore.create(store_path, SPEC) as store:
        store.append(make_episode(0))
    chunk = store_path / "data" / "obs" / "c" / "0" / "0"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x01
    chunk.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="array data/obs is corrupt"):
        DemoStore.open(store_path).load_transitions()
    with pytest.raises(StoreError, match="array data/obs is corrupt .* appending would rewrite that chunk"):
        DemoStore.open(store_path, mode="a")


def test_batches_record_provenance_and_point_from_every_episode(store_path: Path) -> None:
    with DemoStore.create(store_path, SPEC) as store:
        store.append(make_episode(0))  # no batch described: one of kind "api"
        first = store.start_batch(Batch.now("collect", "scripted", {"task": "door"}, noise=0.1, perturb=0.0))
        store.append_many([make_episode(5), make_episode(3)])
        store.start_batch(Batch.now("import", "dapg"))  # nothing appended: never written
    store = DemoStore.open(store_path)
    assert [batch.kind for batch in store.batches] == ["api", "collect"] and first == 1
    assert store.episode_meta()["batch"].tolist() == [0, 1, 1]
    collect = store.batches[1]
    assert collect.demonstrator == "scripted" and collect.arguments == {"task": "door"}
    assert (collect.noise, collect.perturb, collect.seed_range) == (0.1, 0.0, (3, 5))
    assert collect.awac_robot_version == __version__ and collect.host and collect.started_utc.startswith("20")
    assert "pytest" in collect.command or "test" in collect.command
    attrs = dict(zarr.open_group(store_path, mode="r").attrs)  # readable with zarr alone
    assert attrs["batches"][1]["seed_range"] == [3, 5] and attrs["published"]["episodes"] == 3


def _downgrade_to_format_1(path: Path) -> None:
    """The on-disk state of a format-1 store: no record, no batches, no meta/batch; a torn tail left by a kill."""
    shutil.rmtree(path / "meta" / "batch")
    root_json = path / "zarr.json"
    document = json.loads(root_json.read_text())
    for key in ("published", "batches", "store_id", "derived_from"):
        del document["attributes"][key]
    document["attributes"]["format_version"] = 1
    root_json.write_text(json.dumps(document))
    ends = zarr.open_group(path, mode="r+")["meta/episode_ends"]
    ends.resize((ends.shape[0] + 1,))  # format 1's unpublished tail: grown, value never written


def test_format_1_store_is_refused_in_one_line_then_upgrades(store_path: Path, capsys) -> None:
    with DemoStore.create(store_path, SPEC) as store:
        store.append_many([make_episode(0), make_episode(1)])
    _downgrade_to_format_1(store_path)
    with pytest.raises(StoreError, match=f"format version 1.*`awac-robot demos upgrade {store_path}`") as info:
        DemoStore.open(store_path)
    assert "\n" not in str(info.value)
    assert main(["demos", "info", str(store_path)]) == 2
    assert "demos upgrade" in capsys.readouterr().err

    assert main(["demos", "upgrade", str(store_path)]) == 0
    assert "from format 1 to 2: 2 episodes" in capsys.readouterr().out
    assert verify_store(store_path) == 2
    store = DemoStore.open(store_path)
    assert [b.kind for b in store.batches] == ["unrecorded"] and store.batches[0].seed_range == (0, 1)
    assert store.episode_meta()["batch"].tolist() == [0, 0]
    with DemoStore.open(store_path, mode="a") as writer:
        writer.append(make_episode(2))
    assert verify_store(store_path) == 3
    assert main(["demos", "upgrade", str(store_path)]) == 2
    assert "already has format version 2" in capsys.readouterr().err


def test_upgrade_refuses_a_group_in_place_of_an_array(store_path: Path, capsys) -> None:
    with DemoStore.create(store_path, SPEC) as store:
        store.append(make_episode(0))
    _downgrade_to_format_1(store_path)
    shutil.rmtree(store_path / "meta" / "seed")
    zarr.open_group(store_path / "meta" / "seed", mode="w")
    before = store_files(store_path)
    assert main(["demos", "upgrade", str(store_path)]) == 2
    assert "meta/seed is a group, expected an array (damaged); not upgraded" in capsys.readouterr().err
    assert store_files(store_path) == before


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
    one_line_error(store_path, f"format version {FORMAT_VERSION + 1} .*upgrade awac-robot")
    misspelt = json.loads(original)
    misspelt["attributes"]["reward_mode"] = "sprase"
    root_json.write_text(json.dumps(misspelt))
    one_line_error(store_path, "root attribute 'reward_mode' is 'sprase', not one of sparse, dense")
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
    """A real writer process appends pairs of episodes in a loop and is SIGKILLed at random moments, five times.

    Each pair is one publication, so a kill leaves both episodes or neither.
    """
    rng = random.Random(1234)
    DemoStore.create(store_path, SPEC).close()
    published = 0
    for _ in range(5):
        writer = _start_writer(store_path, published)
        target = published + 4
        _wait_for(lambda target=target: _published(store_path) >= target)
        # A reader reads (and checks) the store while the writer keeps appending.
        assert verify_store(store_path) >= target
        time.sleep(rng.uniform(0.0, 0.15))
        writer.send_signal(signal.SIGKILL)
        assert writer.wait(timeout=30) == -signal.SIGKILL, writer.stderr.read().decode()
        count = verify_store(store_path)
        assert count >= target and count % 2 == 0
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
        store.append_many([make_episode(seed), make_episode(seed + 1)])
        seed += 2


if __name__ == "__main__":
    _append_forever(sys.argv[1], int(sys.argv[2]))


def test_a_publication_is_one_write_of_the_root_metadata(store_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """zarr's `attrs.update` writes zarr.json once per key: a reader could see the new record without its batch."""
    from zarr.storage import LocalStore

    written: list[str] = []
    original = LocalStore.set

    async def recording_set(self: LocalStore, key: str, value: object) -> None:
        written.append(key)
        await original(self, key, value)

    with DemoStore.create(store_path, SPEC) as store:
        store.start_batch(Batch.now("collect", "scripted"))
        monkeypatch.setattr(LocalStore, "set", recording_set)
        store.append_many([make_episode(0), make_episode(1)])
        monkeypatch.undo()
    assert written.count("zarr.json") == 1 and written[-1] == "zarr.json"  # the root, once, and last
