"""Chat tokenization with prompt masking, best-fit packing, and block-diagonal attention of packed rows."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from arena.targets.base import Example
from arena.training.packing import IGNORE, TokenizedExample, best_fit_bins, chat_texts, pack, tokenize_examples

SEQ = 64


# -- best-fit-decreasing bin packing --------------------------------------------------------------

@pytest.mark.parametrize(
    "lengths,capacity,expected",
    [
        # Decreasing order 6(0) 5(2) 5(3) 4(1) 3(4): 6 opens bin0 (4 left), 5 opens bin1 (5 left), the
        # second 5 fills bin1 exactly, 4 fills bin0 exactly, 3 fits nowhere and opens bin2.
        ([6, 4, 5, 5, 3], 10, [[0, 1], [2, 3], [4]]),
        # Best fit, not first fit: 7 -> bin0 (3 left), 4 -> bin1 (6 left), 4 -> bin1 (2 left); the 1
        # fits both and goes to the tightest, bin1 (first fit would put it in bin0).
        ([7, 4, 4, 1], 10, [[0], [1, 2, 3]]),
        # 6(1) -> bin0 (4 left), 5(0) -> bin1 (5 left), 4(2) -> bin0 (4 left beats 5 left).
        ([5, 6, 4], 10, [[1, 2], [0]]),
        # Ties: equal lengths keep index order; equal room goes to the older bin.
        ([3, 3, 3, 3], 6, [[0, 1], [2, 3]]),
        ([6, 6, 4], 10, [[0, 2], [1]]),
        ([10, 10], 10, [[0], [1]]),
        ([], 10, []),
    ],
)
def test_best_fit_bins_hand_examples(lengths, capacity, expected):
    assert best_fit_bins(lengths, capacity) == expected


def test_best_fit_bins_never_overfills_and_places_each_item_once():
    import random

    rng = random.Random(0)
    for _ in range(50):
        lengths = [rng.randint(1, 20) for _ in range(rng.randint(1, 40))]
        bins = best_fit_bins(lengths, 20)
        assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
        assert all(sum(lengths[i] for i in b) <= 20 for b in bins)
        # A bin is only opened when the item fits no earlier bin, so no two bins could be merged.
        loads = sorted(sum(lengths[i] for i in b) for b in bins)
        assert len(loads) < 2 or loads[0] + loads[1] > 20


# -- tokenization ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def arith_examples():
    from arena.targets.arith import ArithTarget

    return ArithTarget(ArithTarget.Options(n_train=40), None).train_examples(seed=0)


def test_chat_template_prompt_ends_in_assistant_header(tokenizer):
    prompt, full = chat_texts(tokenizer, "What is 2 + 3?", "2 + 3 = 5")
    assert prompt == "<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n"
    assert full == prompt + "2 + 3 = 5<|im_end|>\n"


def test_tokenize_examples_masks_the_prompt(tokenizer, arith_examples):
    tok_ex, dropped = tokenize_examples(tokenizer, arith_examples, SEQ)
    assert dropped == 0 and len(tok_ex) == len(arith_examples)
    for ex, te in zip(arith_examples, tok_ex):
        prompt_text, _ = chat_texts(tokenizer, ex.prompt)
        assert 0 < te.n_prompt < len(te.input_ids)
        assert tokenizer.decode(te.input_ids[: te.n_prompt]) == prompt_text
        # The labelled part is exactly the assistant response and the end-of-turn token.
        assert tokenizer.decode(te.input_ids[te.n_prompt:]) == ex.response + "<|im_end|>\n"
        assert tokenizer.convert_tokens_to_ids("<|im_end|>") in te.input_ids[te.n_prompt:]


def test_tokenize_examples_truncates_and_drops(tokenizer):
    long_prompt = Example(prompt="word " * 200, response="ok")
    long_answer = Example(prompt="What is 1 + 1?", response="two " * 200)
    kept, dropped = tokenize_examples(tokenizer, [long_prompt, long_answer], SEQ)
    assert dropped == 1  # a prompt that fills the row leaves no label token
    (te,) = kept
    assert len(te.input_ids) == SEQ and te.n_prompt < SEQ


# -- packing --------------------------------------------------------------------------------------

def _documents(packed, row: int) -> list[tuple[int, int]]:
    """(start, end) of each real document in a row, from the position_ids restarts."""
    n = int(packed.n_real[row])
    pos = packed.position_ids[row, :n].tolist()
    starts = [i for i, p in enumerate(pos) if p == 0]
    return list(zip(starts, starts[1:] + [n]))


@pytest.fixture(scope="module")
def packed(tokenizer, arith_examples):
    tok_ex, _ = tokenize_examples(tokenizer, arith_examples, SEQ)
    return tok_ex, pack(tok_ex, SEQ, tokenizer.pad_token_id, seed=0)


def test_pack_places_every_example_once_within_rows(packed, tokenizer):
    tok_ex, p = packed
    assert p.input_ids.shape == p.labels.shape == p.position_ids.shape == (p.rows, SEQ)
    assert p.n_examples == len(tok_ex)
    assert int(p.n_real.max()) <= SEQ
    assert int(p.n_real.sum()) == sum(len(e.input_ids) for e in tok_ex)
    assert p.rows < len(tok_ex)  # several documents per row, or packing did nothing
    seen = Counter()
    for r in range(p.rows):
        n = int(p.n_real[r])
        assert (p.input_ids[r, n:] == tokenizer.pad_token_id).all()
        for s, e in _documents(p, r):
            seen[tuple(p.input_ids[r, s:e].tolist())] += 1
    assert seen == Counter(tuple(e.input_ids) for e in tok_ex)


def test_pack_labels_and_positions(packed):
    tok_ex, p = packed
    by_ids = {tuple(e.input_ids): e for e in tok_ex}
    for r in range(p.rows):
        n = int(p.n_real[r])
        assert (p.labels[r, n:] == IGNORE).all()  # padding is never scored
        for s, e in _documents(p, r):
            ex = by_ids[tuple(p.input_ids[r, s:e].tolist())]
            assert p.position_ids[r, s:e].tolist() == list(range(e - s))
            assert (p.labels[r, s : s + ex.n_prompt] == IGNORE).all()
            assert p.labels[r, s] == IGNORE  # a document's first token is never predicted from the previous one
            assert p.labels[r, s + ex.n_prompt : e].tolist() == ex.input_ids[ex.n_prompt :]
    assert torch.equal(p.n_label, (p.labels != IGNORE).sum(1))


def test_pack_is_deterministic_and_seeded(packed, tokenizer):
    tok_ex, p = packed
    again = pack(tok_ex, SEQ, tokenizer.pad_token_id, seed=0)
    other = pack(tok_ex, SEQ, tokenizer.pad_token_id, seed=1)
    assert torch.equal(again.input_ids, p.input_ids)
    assert not torch.equal(other.input_ids, p.input_ids)
    assert sorted(map(tuple, other.input_ids.tolist())) == sorted(map(tuple, p.input_ids.tolist()))


def test_pack_rejects_empty_input():
    from arena.errors import ArenaError

    with pytest.raises(ArenaError, match="no training examples.*all 3 .*train.seq_len \\(64\\)"):
        pack([], SEQ, 0, seed=0, n_dropped=3)
    with pytest.raises(ArenaError, match="no training examples.*produced none"):
        pack([], SEQ, 0, seed=0)


def test_pack_by_hand():
    ex = [TokenizedExample([1, 2, 3, 4], 2), TokenizedExample([5, 6, 7], 1), TokenizedExample([8, 9], 1)]
    p = pack(ex, 6, pad_id=0, seed=0)
    # Lengths 4, 3, 2 into rows of 6: bins [[0, 2], [1]].
    rows = sorted(p.input_ids.tolist())
    assert rows == [[1, 2, 3, 4, 8, 9], [5, 6, 7, 0, 0, 0]]
    i = p.input_ids.tolist().index([1, 2, 3, 4, 8, 9])
    assert p.labels[i].tolist() == [IGNORE, IGNORE, 3, 4, IGNORE, 9]
    assert p.position_ids[i].tolist() == [0, 1, 2, 3, 0, 1]
    j = 1 - i
    assert p.labels[j].tolist() == [IGNORE, 6, 7, IGNORE, IGNORE, IGNORE]
    assert p.position_ids[j].tolist() == [0, 1, 2, 0, 1, 2]
    assert p.n_real.tolist()[i] == 6 and p.n_real.tolist()[j] == 3


# -- packed rows attend block-diagonally ----------------------------------------------------------

@torch.no_grad()
def test_packed_forward_equals_each_document_alone(packed, tiny_base):
    model, _ = tiny_base
    _, p = packed
    rows = [r for r in range(p.rows) if len(_documents(p, r)) >= 2 and int(p.n_real[r]) < SEQ][:3]
    assert len(rows) == 3, "expected rows holding 2+ documents and padding"
    logits = model(input_ids=p.input_ids[rows], position_ids=p.position_ids[rows], use_cache=False).logits
    checked = 0
    for k, r in enumerate(rows):
        for s, e in _documents(p, r):
            alone = model(input_ids=p.input_ids[r : r + 1, s:e], use_cache=False).logits[0]
            torch.testing.assert_close(logits[k, s:e], alone, rtol=0, atol=1e-4)
            checked += 1
    assert checked >= 6
    # Sanity: without position_ids the same row is one causal sequence, and later documents differ.
    plain = model(input_ids=p.input_ids[rows[:1]], use_cache=False).logits[0]
    s, e = _documents(p, rows[0])[-1]
    assert float((plain[s:e] - logits[0, s:e]).abs().max()) > 1e-3
