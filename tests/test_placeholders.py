"""check_placeholders on real BPE tokenizers trained in-process (Hugging Face `tokenizers`), a
transformers-like tokenizer, and plain callables."""

import pytest

tokenizers = pytest.importorskip("tokenizers")

from lossviz.losses import check_placeholders  # noqa: E402

LINES = [
    "Tom has 3 pens and buys 2. Step 1: 3 + 2 = 5 ки\nStep 2: The answer is 5 ки",
    "A box holds 8 eggs. Step 1: 8 * 5 = 40 ки\nStep 2: The answer is 40 ки",
    "Mia had 15 stickers and gave 6 away. Step 1: 15 - 6 = 9 ки\nStep 2: The answer is 9 ки",
]


def bpe(pre_tokenizer, special_tokens=()):
    from tokenizers import Tokenizer, models, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer
    tok.train_from_iterator(LINES, trainers.BpeTrainer(vocab_size=90, show_progress=False))
    if special_tokens:
        tok.add_special_tokens(list(special_tokens))
    return tok


@pytest.fixture(scope="module")
def merging():
    """Metaspace (SentencePiece-style): the space before "ки" and the newline after it get merged in."""
    return bpe(tokenizers.pre_tokenizers.Metaspace())


def test_a_real_merge_is_reported_step_by_step(merging):
    tokens = merging.encode(LINES[0]).tokens
    assert merging.encode("ки").tokens == ["▁ки"]  # the placeholder alone: one token, with the space marker
    assert tokens[-1] == "▁ки" and "▁ки" not in tokens[:-1]  # the premise: before a newline BPE merged it further
    report = check_placeholders(merging, LINES, "ки")
    assert (report.steps, report.kept, report.ok) == (6, 3, False)  # only each text's last step survives
    assert report.token_id == merging.encode("ки").ids[0]
    assert [(s.text, s.step) for s in report.lost] == [(0, 1), (1, 1), (2, 1)]
    first = report.lost[0]
    assert len(first.tokens) == 1 and first.tokens[0].startswith("▁ки") and first.tokens[0] in tokens  # the token that swallowed it
    assert "3 of 6 steps" in str(report) and "text 0, step 1" in str(report)
    with pytest.raises(ValueError, match=r"3 of 6 PRM steps lose their placeholder 'ки'.*text 0, step 1"):
        report.raise_if_lost()


def test_an_explicit_token_id_is_used_as_given(merging):
    """The vocabulary entry "ки" (convert_tokens_to_ids) never occurs in these encodings: every step is lost."""
    report = check_placeholders(merging, LINES, "ки", token_id=merging.token_to_id("ки"))
    assert (report.steps, report.kept, report.token_id) == (6, 0, merging.token_to_id("ки"))


def test_protected_placeholder_survives(merging):
    safe = bpe(tokenizers.pre_tokenizers.Metaspace(), special_tokens=["ки"])
    report = check_placeholders(safe, LINES, "ки")
    assert (report.steps, report.kept, report.lost) == (6, 6, [])
    report.raise_if_lost()
    # independent count: the placeholder id appears once per step in the encodings
    assert sum(safe.encode(t).ids.count(report.token_id) for t in LINES) == 6


def test_no_merge_with_a_whitespace_pre_tokenizer():
    tok = bpe(tokenizers.pre_tokenizers.WhitespaceSplit())
    assert tok.encode(LINES[0]).tokens.count("ки") == 2
    assert check_placeholders(tok, LINES, "ки").ok


def test_only_the_merged_steps_are_reported(merging):
    """Followed by a comma instead of a newline, step 1's " ки" stays "▁ки"; step 2's merges with the newline."""
    text = "Step 1: 2 + 2 = 4 ки, Step 2: The answer is 4 ки\nStep 3: done ки"
    report = check_placeholders(merging, [text], "ки")
    assert (report.steps, report.kept) == (3, 2)
    assert [(s.text, s.step) for s in report.lost] == [(0, 2)]


def test_a_placeholder_that_is_not_one_token_loses_every_step(merging):
    assert check_placeholders(merging, LINES, "<step>").steps == 0  # not in the texts either
    report = check_placeholders(merging, ["a <step> b <step>"], "<step>")
    assert report.token_id is None and report.steps == 2 and report.kept == 0
    assert "alone encodes to" in report.note and "so no step can keep it as one token" in report.note


class TransformersLike:
    """The duck-typed surface of a transformers fast tokenizer, backed by a tokenizers.Tokenizer."""

    unk_token, unk_token_id = None, None

    def __init__(self, tok, offsets=True):
        self.tok, self.offsets = tok, offsets

    def convert_tokens_to_ids(self, token):
        return self.tok.token_to_id(token)

    def convert_ids_to_tokens(self, ids):
        return [self.tok.id_to_token(i) for i in ids]

    def __call__(self, text, add_special_tokens=True, return_offsets_mapping=False):
        enc = self.tok.encode(text, add_special_tokens=add_special_tokens)
        if return_offsets_mapping and not self.offsets:
            raise NotImplementedError("return_offset_mapping is not available when using Python tokenizers")
        out = {"input_ids": enc.ids}
        if return_offsets_mapping:
            out["offset_mapping"] = enc.offsets
        return out


def test_transformers_tokenizers_with_and_without_offsets(merging):
    fast = check_placeholders(TransformersLike(merging), LINES, "ки")
    assert (fast.steps, fast.kept, [s.step for s in fast.lost]) == (6, 3, [1, 1, 1])
    slow = check_placeholders(TransformersLike(merging, offsets=False), LINES, "ки")
    assert (slow.steps, slow.kept, [s.step for s in slow.lost]) == (6, 3, [None] * 3)  # counts only, no positions


def test_callables_returning_strings_or_ids(merging):
    assert check_placeholders(str.split, LINES, "ки").ok
    strings = check_placeholders(lambda t: merging.encode(t).tokens, LINES, "ки")  # "▁ки" is not literal text: counts
    assert (strings.steps, strings.kept, [(s.text, s.step) for s in strings.lost]) == (6, 3, [(0, None), (1, None), (2, None)])
    ids = check_placeholders(lambda t: merging.encode(t).ids, LINES, "ки")
    assert (ids.steps, ids.kept, ids.token_id) == (6, 3, merging.encode("ки").ids[0])
    split_with_newlines = lambda t: t.replace(" ки\n", " ки\n ").split(" ")  # "ки\n" stays one piece, "ки" at the end does not
    located = check_placeholders(split_with_newlines, LINES, "ки")
    assert [(s.text, s.step, s.tokens) for s in located.lost] == [(0, 1, ("ки\n",)), (1, 1, ("ки\n",)), (2, 1, ("ки\n",))]


@pytest.mark.parametrize("call, error, match", [
    (lambda tok: check_placeholders(tok, LINES, ""), TypeError, "placeholder must be a non-empty string"),
    (lambda tok: check_placeholders(tok, LINES, 17), TypeError, "placeholder must be a non-empty string"),
    (lambda tok: check_placeholders(tok, LINES[0], "ки"), TypeError, "got a single string; wrap it in a list"),
    (lambda tok: check_placeholders(tok, 5, "ки"), TypeError, "texts must be a list of strings, got int"),
    (lambda tok: check_placeholders(tok, ["a", 3], "ки"), TypeError, r"texts\[1\] must be a string, got int"),
    (lambda tok: check_placeholders(tok, LINES, "ки", token_id=-1), TypeError, "token_id must be a non-negative int"),
    (lambda tok: check_placeholders(42, LINES, "ки"), TypeError, "tokenizer must be a tokenizers.Tokenizer"),
    (lambda tok: check_placeholders(str.split, LINES, "ки", token_id=3), TypeError, "token_id= needs a tokenizer that returns token ids"),
    (lambda tok: check_placeholders(lambda t: 3, LINES, "ки"), TypeError, "must return a list of token strings or ids, got int"),
    (lambda tok: check_placeholders(lambda t: [1.5], LINES, "ки"), TypeError, "got items of type float"),
])
def test_bad_arguments_get_one_line_errors(merging, call, error, match):
    with pytest.raises(error, match=match) as info:
        call(merging)
    assert "\n" not in str(info.value)
