"""Teacher forcing packed as a prefix tree (``generative._prefix_tree``, the plain Llama's path) gives the
log-probabilities of one row per sequence (transformers' model, the path every other model takes)."""

from __future__ import annotations

import numpy as np
import pytest

from genret.retrieval._lm import load_lm
from genret.retrieval.generative._lm_steps import Stepper
from genret.retrieval.generative._prefix_tree import PrefixTree, running_sums


def test_tree_shares_prefixes_and_feeds_only_inner_nodes():
    t = PrefixTree.build([(5, 6, 7), (5, 6), (5, 8), (9,), (5, 6, 7)])
    assert t.tokens.tolist() == [5, 6, 7, 8, 9]
    assert t.parent.tolist() == [-1, 0, 1, 0, -1]
    assert t.depth.tolist() == [0, 1, 2, 1, 0]
    assert t.inputs.tolist() == [0, 1]  # 7, 8 and 9 are leaves: read off their parents' outputs
    assert t.visibility().tolist() == [[True, False], [True, True]]
    sums = running_sums(t, np.array([-1.0, -2.0, -3.0, -4.0, -5.0]))
    assert [s.tolist() for s in sums] == [[-1, -3, -6], [-1, -3], [-1, -5], [-5], [-1, -3, -6]]


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-4), ("bfloat16", 0.25)])
def test_tree_teacher_forcing_equals_one_row_per_sequence(dtype, tol):
    lite = load_lm("smollm2-135m-instruct", "cpu", dtype, lite=True)
    ref = load_lm("smollm2-135m-instruct", "cpu", dtype)
    assert type(lite.model).__module__ == "genret.retrieval._llama_torch"
    assert "transformers" in type(ref.model).__module__
    tok = lite.tokenizer
    prompts = [tok(p)["input_ids"] for p in ("Query: who wrote Hamlet?\nText:", "Query: oil\nText:",
                                             "Write the passage.\nQuery: what absorbs red light in plants?\nText:")]
    texts = [" William Shakespeare", " William", " Shakespeare wrote Hamlet", " the", " Hamlet", " red light",
             " chlorophyll absorbs red light", " chlorophyll", " oil embargo of 1973", " oil"]
    seqs = [tuple(tok(t)["input_ids"]) for t in texts]
    rows = [i % 3 for i in range(len(seqs))] + [0, 2, 1, 1]
    seqs += [seqs[0], seqs[0], (), seqs[3]]  # repeats, across rows and within one; an empty sequence
    got = []
    for lm in (lite, ref):
        st = Stepper(lm)
        st.start(prompts)
        got.append(st.teacher_force(rows, seqs))
        assert got[-1][seqs.index(())] == 0.0
    assert np.abs(got[0] - got[1]).max() <= tol
    # a chunk smaller than a row's sequences: several passes, same values
    st = Stepper(lite)
    st.start(prompts)
    assert np.abs(st.teacher_force(rows, seqs, chunk=1) - got[0]).max() <= min(tol, 1e-3)


def test_stacked_steppers_score_as_each_alone():
    """Rows of two steppers (prompts of different lengths) joined for one pass give each side's own values."""
    lm = load_lm("smollm2-135m-instruct", "cpu", "float32", lite=True)
    tok = lm.tokenizer
    a, b = Stepper(lm), Stepper(lm)
    a.start([tok(p)["input_ids"] for p in ("Query: who wrote Hamlet?\nText:", "Query: a much longer question about "
                                                                               "the oil embargo of 1973\nText:")])
    b.start([tok("Query: \nText:")["input_ids"]])
    assert a.can_stack(b) and not Stepper(load_lm("smollm2-135m-instruct", "cpu", "float32")).can_stack(b)
    seqs = [tuple(tok(t)["input_ids"]) for t in (" William Shakespeare", " the oil", " oil embargo", " Hamlet")]
    both = a.stacked(b)
    got = both.teacher_force([0, 1, 1, 2, 2], [seqs[0], seqs[1], seqs[2], seqs[3], seqs[0]])
    want = np.concatenate([a.teacher_force([0, 1, 1], seqs[:3]), b.teacher_force([0, 0], [seqs[3], seqs[0]])])
    assert np.abs(got - want).max() <= 1e-4
    assert both.first.shape[0] == 3 and a.first.shape[0] == 2  # the parts are left as they were
