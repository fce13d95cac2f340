"""`demos info`, `demos filter` and `demos split` on real stores: views, selection, provenance carried over."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from store_helpers import SPEC, assert_same_episodes, make_episode, read_episodes

from awac_robot.cli import main
from awac_robot.provenance import Batch
from awac_robot.store import DemoStore
from awac_robot.store_ops import EpisodeFilter
from awac_robot.train.sources import select

#: (batch, source, seeds): a store as collect, an import and two online runs leave it
LAYOUT = [
    (Batch.now("collect", "scripted", {"task": "door"}, noise=0.0, perturb=0.0), "scripted", range(0, 4)),
    (Batch.now("import", "dapg", {"file": "/data/door.pickle"}), "human", range(10, 13)),
    (Batch.now("online", "awac", {"run_id": "runA"}), "online:runA", range(20, 23)),
    (Batch.now("online", "awac", {"run_id": "runB"}), "online:runB", range(30, 32)),
]


@pytest.fixture
def mixed_store(tmp_path: Path) -> Path:
    path = tmp_path / "mixed.zarr"
    with DemoStore.create(path, SPEC) as store:
        for batch, source, seeds in LAYOUT:
            store.start_batch(batch)
            store.append_many([make_episode(seed, source) for seed in seeds])
    return path


def _demos(*args: str) -> int:
    return main(["demos", *[str(a) for a in args]])


def _sources_and_seeds(path: Path) -> list[tuple[str, int]]:
    return [(e.source, e.seed) for e in read_episodes(path)]


def test_filter_by_run_selects_or_removes_one_online_run(mixed_store: Path, tmp_path: Path, capsys) -> None:
    only = tmp_path / "runA.zarr"
    assert _demos("filter", mixed_store, "--run", "runA", "--out", only) == 0
    assert "kept 3 of 12 episodes" in capsys.readouterr().out
    assert_same_episodes(read_episodes(only), [make_episode(seed, "online:runA") for seed in range(20, 23)])
    store = DemoStore.open(only)
    assert [(b.kind, b.arguments) for b in store.batches] == [("online", {"run_id": "runA"})]
    assert store.batches[0].seed_range == (20, 22) and store.batches[0].command == LAYOUT[2][0].command
    derived = store.attrs["derived_from"]
    assert derived["operation"] == "filter" and derived["inputs"][0]["store_id"] == DemoStore.open(mixed_store).store_id
    assert derived["arguments"]["filter"]["runs"] == ["runA"]

    cleaned = tmp_path / "clean.zarr"
    assert _demos("filter", mixed_store, "--run", "runA", "--exclude", "--out", cleaned) == 0
    kept = [(s, seed) for _, s, seeds in LAYOUT if s != "online:runA" for seed in seeds]
    assert _sources_and_seeds(cleaned) == kept
    assert [b.kind for b in DemoStore.open(cleaned).batches] == ["collect", "import", "online"]
    assert DemoStore.open(cleaned).episode_meta()["batch"].tolist() == [0] * 4 + [1] * 3 + [2] * 2


def test_filter_by_source_index_range_and_success(mixed_store: Path, tmp_path: Path) -> None:
    assert _demos("filter", mixed_store, "--source", "online", "--out", tmp_path / "online.zarr") == 0
    assert {s for s, _ in _sources_and_seeds(tmp_path / "online.zarr")} == {"online:runA", "online:runB"}
    assert _demos("filter", mixed_store, "--source", "scripted,human", "--out", tmp_path / "offline.zarr") == 0
    assert [seed for _, seed in _sources_and_seeds(tmp_path / "offline.zarr")] == [0, 1, 2, 3, 10, 11, 12]
    assert _demos("filter", mixed_store, "--episodes", "2:5", "--out", tmp_path / "range.zarr") == 0
    assert [seed for _, seed in _sources_and_seeds(tmp_path / "range.zarr")] == [2, 3, 10]
    assert _demos("filter", mixed_store, "--success", "yes", "--out", tmp_path / "good.zarr") == 0
    solved = [e.seed for e in read_episodes(mixed_store) if e.solved]
    assert [seed for _, seed in _sources_and_seeds(tmp_path / "good.zarr")] == solved and solved
    assert _demos("filter", mixed_store, "--success", "no", "--source", "scripted", "--out", tmp_path / "x.zarr") == 0
    assert [seed for _, seed in _sources_and_seeds(tmp_path / "x.zarr")] == [1, 2]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--source", "scripte"], "has no episodes from 'scripte' (its sources: human, online:runA, online:runB"),
        (["--run", "runC", "--exclude"], "has no episodes from 'online:runC'"),
        (["--episodes", "5:99"], "episode range 5:99 is not inside store"),
        (["--episodes", "five"], "is not START:STOP"),
        (["--episodes", "1:3", "--success", "yes"], "passes the filter: nothing written"),
        (["--exclude"], "give at least one of --source"),
    ],
)
def test_filter_refusals_write_nothing(
    mixed_store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    out = tmp_path / "out.zarr"
    assert _demos("filter", mixed_store, *args, "--out", out) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mixed.zarr"]


def test_split_by_episode_is_disjoint_complete_reproducible_and_keeps_provenance(
    mixed_store: Path, tmp_path: Path, capsys
) -> None:
    train, val = tmp_path / "train.zarr", tmp_path / "val.zarr"
    assert _demos("split", mixed_store, "--val", "0.25", "--seed", "0", "--out-train", train, "--out-val", val) == 0
    assert "9 episodes in" in capsys.readouterr().out
    everything = {(e.source, e.seed): e for e in read_episodes(mixed_store)}
    parts = [_sources_and_seeds(train), _sources_and_seeds(val)]
    assert (len(parts[0]), len(parts[1])) == (9, 3) and not set(parts[0]) & set(parts[1])
    assert set(parts[0]) | set(parts[1]) == set(everything)
    order = list(everything)
    assert parts[0] == sorted(parts[0], key=order.index)  # the store's order is kept
    for path in (train, val):
        store = DemoStore.open(path)
        for episode, batch in zip(store.episodes(), store.episode_meta()["batch"], strict=True):
            assert_same_episodes([episode], [everything[(episode.source, episode.seed)]])
            original = next(b for b, s, _ in LAYOUT if s == episode.source)
            assert store.batches[batch].command == original.command and store.batches[batch].kind == original.kind
        assert store.attrs["derived_from"]["arguments"]["part"] == path.stem

    again = tmp_path / "again"
    again.mkdir()
    args = ["--out-train", again / "t.zarr", "--out-val", again / "v.zarr"]
    assert _demos("split", mixed_store, "--val", "0.25", "--seed", "0", *args) == 0
    assert _sources_and_seeds(again / "v.zarr") == parts[1]
    assert _demos("split", mixed_store, "--val", "0.25", "--seed", "1", "--out-train", tmp_path / "t1.zarr",
                  "--out-val", tmp_path / "v1.zarr") == 0  # fmt: skip
    assert _sources_and_seeds(tmp_path / "v1.zarr") != parts[1]


def test_split_refusals_write_neither_store(mixed_store: Path, tmp_path: Path, capsys) -> None:
    train, val = tmp_path / "train.zarr", tmp_path / "val.zarr"
    val.mkdir()
    (val / "keep.txt").write_text("mine")
    assert _demos("split", mixed_store, "--out-train", train, "--out-val", val) == 2
    assert f"{val} already exists" in capsys.readouterr().err
    assert not train.exists() and (val / "keep.txt").read_text() == "mine"
    for fraction in ("0", "1", "nan"):
        assert _demos("split", mixed_store, "--val", fraction, "--out-train", train, "--out-val", tmp_path / "v") == 2
        assert "must be in (0, 1)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mixed.zarr", "val.zarr"]


def test_info_views_per_source_batch_episode_and_statistics(mixed_store: Path, capsys) -> None:
    episodes = read_episodes(mixed_store)
    assert _demos("info", mixed_store, "--episodes", "--stats") == 0
    out = capsys.readouterr().out.splitlines()
    runa = next(line for line in out if line.startswith("online:runA"))
    returns = [e.total_return for e in episodes if e.source == "online:runA"]
    assert runa.split()[:3] == ["online:runA", "3", str(sum(e.length for e in episodes[7:10]))]
    assert f"{np.mean(returns):.2f}" in runa and "20-22 / 2" in runa
    batch_line = "batch 1: import by dapg, noise -, perturb -, seeds 10-12, 3 episodes (human)"
    assert any(line.startswith(batch_line) for line in out)
    rows = [line.split() for line in out if line[:7].strip().isdigit()]
    assert [(int(r[0]), r[1], int(r[2]), int(r[3]), int(r[4])) for r in rows] == [
        (index, e.source, batch, e.seed, e.length)
        for index, (e, batch) in enumerate(zip(episodes, [0] * 4 + [1] * 3 + [2] * 3 + [3] * 2, strict=True))
    ]
    obs = np.concatenate([e.obs[:-1] for e in episodes]).astype(np.float64)
    hinge = SPEC.obs_names.index("door_hinge_angle")
    line = next(line for line in out if line.strip().startswith("door_hinge_angle"))
    assert [float(x) for x in line.split()[1:]] == pytest.approx(
        [obs[:, hinge].min(), obs[:, hinge].max(), obs[:, hinge].mean(), obs[:, hinge].std()], rel=1e-3, abs=1e-4
    )
    stats = out[out.index(next(line for line in out if line.startswith("observation"))) :]
    assert [line.split()[0] for line in stats if len(line.split()) == 5 and line.startswith("  ")] == [
        *SPEC.obs_names,
        *SPEC.act_names,
    ]


def test_info_json_has_everything(mixed_store: Path, capsys) -> None:
    episodes = read_episodes(mixed_store)
    assert _demos("info", mixed_store, "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["episodes"] == 12 and info["steps"] == sum(e.length for e in episodes)
    assert info["by_source"]["human"]["episodes"] == 3 and info["by_source"]["human"]["seeds"] == "10-12"
    assert [b["batch"]["kind"] for b in info["batches"]] == ["collect", "import", "online", "online"]
    assert info["batches"][3]["batch"]["seed_range"] == [30, 31] and info["batches"][3]["episodes"] == 2
    assert [row["seed"] for row in info["episode_rows"]] == [e.seed for e in episodes]
    assert [row["success"] for row in info["episode_rows"]] == [e.solved for e in episodes]
    actions = np.concatenate([e.action for e in episodes]).astype(np.float64)
    assert [d["max"] for d in info["action_stats"]] == pytest.approx(actions.max(0).tolist())
    assert [d["std"] for d in info["action_stats"]] == pytest.approx(actions.std(0).tolist())
    assert info["action_stats"][0]["name"] == SPEC.act_names[0]


def test_an_empty_store_describes_itself(tmp_path: Path, capsys) -> None:
    DemoStore.create(tmp_path / "empty.zarr", SPEC).close()
    assert _demos("info", tmp_path / "empty.zarr", "--json") == 0
    info = json.loads(capsys.readouterr().out)
    assert info["episodes"] == 0 and info["batches"] == [] and info["episode_rows"] == []
    assert info["obs_stats"] is None and info["by_source"] == {}


def test_filter_and_training_name_sources_by_the_same_rule(tmp_path: Path) -> None:
    """`demos filter --source NAME` keeps what `--sources NAME` would pretrain on: a name holds its members."""
    sources = np.array(["human", "imported:dapg", "imported:minari", "online:runA", "online", "scripted"])
    meta = {"source": sources, "success": np.zeros(len(sources), dtype=bool)}
    for names, expected in ((("imported",), [1, 2]), (("online",), [3, 4]), (("human", "online:runA"), [0, 3])):
        kept = np.flatnonzero(EpisodeFilter(sources=names).select(meta, tmp_path))
        trained = select(sources, np.ones(len(sources), dtype=np.int64), names, "store").episodes
        assert kept.tolist() == trained.tolist() == expected
