"""An interrupted training run resumes from its saved state and ends bit-identical."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from arm_jax.config import load_tier
from arm_jax.train import loop
from arm_jax.train.resume import (STATE_DIR, ResumeError, TrainStateCheckpoints,
                                   has_saved_state, run_identity)

# 40 training requests in batches of 8: 5 steps an epoch; saves after steps 3, 6 and 9 of
# 11 (two kept), so the resumed part starts at epoch 1's last batch and crosses into
# epoch 2. Dropout, the masked-action task and the moving average make every step depend
# on its random key and on more state than the weights. Losses are logged after steps 1,
# 4, 7, 10 and 11, so every save cuts a logging window in two.
SMALL_RUN = ("train.train_requests=40", "train.batch_size=8", "train.eval_requests=16",
             "train.num_users=40", "train.candidates=4", "train.log_every=3",
             "model.dropout=0.1", "train.masked_actions=0.2", "train.ema_decay=0.9")
STEPS = 11


@pytest.fixture(scope="module")
def run_setup(tiny_overrides):
    tier = load_tier("small", [*tiny_overrides, *SMALL_RUN])
    return tier, loop.make_synthetic_data(tier)


def _leaves(params):
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(params))]


def test_resumed_run_ends_bit_identical(run_setup, tmp_path):
    """A finished run keeps its last two states (after steps 6 and 9 of 11; the one after
    step 3 and its loss log are pruned); resuming it replays steps 9 and 10 from the state
    after step 9, mid-epoch, and must land on exactly the weights the run itself ended
    with. (Two trainings, not three: an interrupted run leaves the same state; a kill is
    the README's SIGKILL run, and committing saves without close() is test_checkpoint.py's
    poll test.)"""
    tier, data = run_setup
    out = tmp_path / "run"
    straight = loop.train_model(tier, data, steps=STEPS, out_dir=out, progress=False,
                                checkpoint_every=3)
    state = out / STATE_DIR
    assert sorted(p.name for p in (state / "steps").iterdir()) == ["6", "9"]
    for kept in ("digests", "losses"):
        assert sorted(p.name for p in (state / kept).iterdir()) == ["6.json", "9.json"]

    resumed = loop.train_model(tier, data, steps=STEPS, out_dir=out, progress=False,
                               checkpoint_every=3, resume=True)
    assert resumed.metrics["resumed_at_step"] == 9
    assert straight.metrics["resumed_at_step"] is None
    a, b = _leaves(straight.params), _leaves(resumed.params)    # the moving averages
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    # the loss log: a window every 3 steps and the last, short one; the window the save
    # cut (steps 8-9 before it, 10 after) is restored with its partial sum, then extended
    assert len(straight.losses) == 5 and resumed.losses == straight.losses
    assert resumed.metrics["overall"] == straight.metrics["overall"]

    # The newest state damaged: refused, the run resumes from the one before, saves the
    # refused step again (verified, not the damaged files blessed) and still ends the same.
    victim = max((p for p in (state / "steps" / "9").rglob("*") if p.is_file()),
                 key=lambda p: p.stat().st_size)
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    victim.write_bytes(bytes(raw))
    again = loop.train_model(tier, data, steps=STEPS, out_dir=out, progress=False,
                             checkpoint_every=3, resume=True)
    assert again.metrics["resumed_at_step"] == 6
    c = _leaves(again.params)
    assert len(a) == len(c) and all(np.array_equal(x, y) for x, y in zip(a, c))
    assert again.losses == straight.losses
    checkpoints = TrainStateCheckpoints(out, run_identity("ranker", tier, STEPS), every=3)
    checkpoints.checkpointer.verify(9)
    checkpoints.close()
    # a loss log emptied since: one error naming it, not a bare JSONDecodeError
    (state / "losses" / "9.json").write_text("")
    with pytest.raises(ResumeError, match=f"{state / 'losses' / '9.json'}: unreadable loss"):
        loop.train_model(tier, data, steps=STEPS, out_dir=out, progress=False,
                         checkpoint_every=3, resume=True)


def test_resume_refuses_what_it_cannot_continue(run_setup, tmp_path, tiny_overrides):
    tier, data = run_setup
    with pytest.raises(ResumeError, match="no training state under .*--checkpoint-every"):
        loop.train_model(tier, data, steps=STEPS, out_dir=tmp_path / "none", progress=False,
                         resume=True)
    with pytest.raises(ValueError, match="need an output directory"):
        loop.train_model(tier, data, steps=4, progress=False, resume=True)
    # the checks run before anything is restored: no trainer needed to reach them
    TrainStateCheckpoints(tmp_path, run_identity("ranker", tier, 4), every=2).start_fresh()
    assert not has_saved_state(tmp_path)     # run.json alone: a baseline would start fresh
    with pytest.raises(ResumeError, match="has no saved step yet"):
        TrainStateCheckpoints(tmp_path, run_identity("ranker", tier, 4), every=2).restore(None)
    other = load_tier("small", [*tiny_overrides, *SMALL_RUN, "train.learning_rate=0.01"])
    for identity, words in [
            (run_identity("ranker", other, 4), r"train.learning_rate: saved [0-9.]+, now 0.01"),
            (run_identity("ranker", tier, 6), r"steps: saved 4, now 6"),
            (run_identity("logreg", tier, 4), r"kind: saved 'ranker', now 'logreg'")]:
        with pytest.raises(ResumeError, match=rf"holds another run's state \({words}\)"):
            TrainStateCheckpoints(tmp_path, identity, every=2).restore(None)
    with pytest.raises(ValueError, match="checkpoint_every: must be >= 0"):
        TrainStateCheckpoints(tmp_path, run_identity("ranker", tier, 4), every=-1)
    for damaged in (b"\xff\xfe", b'{"steps": 4'):     # a run record that is not JSON
        (tmp_path / STATE_DIR / "run.json").write_bytes(damaged)
        with pytest.raises(ResumeError, match=f"{STATE_DIR}/run.json: unreadable run record"):
            TrainStateCheckpoints(tmp_path, run_identity("ranker", tier, 4), every=2).restore(None)
