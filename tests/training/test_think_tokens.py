"""R1-style rows through distillation's token paths: `<think>` and `</think>` are added tokens of an R1-family
tokenizer (special=False, like DeepSeek-R1-Distill-Qwen's 151648/151649), text of the answer, not control tokens.

They used to be byte-less, so alignment (which needs a shared byte prefix from byte 0) gave 0% coverage against
a student that spells them as text, logit KD with one tokenizer dropped them from the trained ids (the student
never learned to close its reasoning), and on-policy spans of a sample opening with `<think>` were empty."""

import numpy as np
import pytest
from transformers import AutoTokenizer

from distill.common.logprobs import TokenLogprobs
from distill.common.models import ensure_embedded
from distill.training.align import TokenBytes, align, control_ids, spans, vocab_map
from distill.training.base import supervised_example
from distill.training.kd import _lead_in_ids, _template_tail

pytestmark = pytest.mark.model

REASONING = "Let me add 12 and 30.\n12 + 30 = 42.\nWait, let me check: 42 - 30 = 12. Yes."
ANSWER = "The answer is \\boxed{42}."
COMPLETION = f"<think>\n{REASONING}\n</think>\n\n{ANSWER}"


@pytest.fixture(scope="module")
def qwen():
    return AutoTokenizer.from_pretrained(str(ensure_embedded("teacher")))


@pytest.fixture(scope="module")
def r1(qwen):
    """The Qwen2.5 tokenizer with R1's think tags added as text tokens, as the R1-Distill-Qwen tokenizers have them."""
    tok = AutoTokenizer.from_pretrained(str(ensure_embedded("teacher")))
    tok.add_tokens(["<think>", "</think>"], special_tokens=False)
    return tok


def logprobs_of(tok, text, k=3):
    ids = np.array(tok(text, add_special_tokens=False)["input_ids"], dtype=np.int32)
    top = np.stack([ids] + [(ids + j) % 1000 for j in range(1, k)], axis=1).astype(np.int32)
    lps = np.tile(np.array([-0.1] + [-3.0] * (k - 1), dtype=np.float32), (len(ids), 1))
    return TokenLogprobs(ids, lps[:, 0], top, lps)


def test_think_tags_are_text_tokens_and_the_turn_markers_control_tokens(r1):
    think, close = r1.convert_tokens_to_ids("<think>"), r1.convert_tokens_to_ids("</think>")
    pieces = TokenBytes(r1).pieces
    assert pieces[think] == b"<think>" and pieces[close] == b"</think>"
    controls = control_ids(r1)
    assert think not in controls and close not in controls
    assert r1.convert_tokens_to_ids("<|im_end|>") in controls and pieces[r1.convert_tokens_to_ids("<|im_end|>")] is None


def test_an_r1_teachers_think_rows_align_with_a_student_spelling_the_tags_as_text(r1, qwen):
    """Two tokenizers (the teacher has the tags as tokens, the student cuts them into pieces): coverage > 0.8."""
    tl = logprobs_of(r1, COMPLETION)
    s_ids = qwen(COMPLETION, add_special_tokens=False)["input_ids"]
    tb, sb = TokenBytes(r1), TokenBytes(qwen)
    a = align(tl.ids, tl.top_ids, tl.top_logprobs, s_ids, tb, sb, vocab_map(tb, sb))
    assert a.coverage > 0.8, a.coverage
    assert a.valid[-1]  # targets run past </think> into the answer


def test_a_teacher_whose_template_opened_the_think_block_still_aligns(r1, qwen):
    """R1's chat template ends the generation prompt with `<think>\\n`: the teacher generated what follows, the
    trained completion holds the tag too. The teacher's targets land after it."""
    tl = logprobs_of(r1, COMPLETION.removeprefix("<think>\n"))
    s_ids = qwen(COMPLETION, add_special_tokens=False)["input_ids"]
    tb, sb = TokenBytes(r1), TokenBytes(qwen)
    a = align(tl.ids, tl.top_ids, tl.top_logprobs, s_ids, tb, sb, vocab_map(tb, sb))
    assert a.coverage > 0.8, a.coverage
    # one tokenizer: the trained ids keep the opening tag the teacher did not generate, and the closing one
    r1_ids = r1(COMPLETION, add_special_tokens=False)["input_ids"]
    lead = _lead_in_ids(r1_ids, tl.ids.tolist(), TokenBytes(r1))
    assert r1.decode(lead) == "<think>\n"
    assert r1.convert_tokens_to_ids("</think>") in tl.ids.tolist()


def test_one_tokenizer_keeps_the_think_tags_in_the_trained_completion(r1):
    row = {"prompt": [{"role": "user", "content": "What is 12 + 30?"}],
           "completion": [{"role": "assistant", "content": COMPLETION}]}  # fmt: skip
    ids, labels = supervised_example(r1, row)
    start = next(i for i, t in enumerate(labels) if t != -100)
    tail = _template_tail(r1, ids[start:])
    assert r1.decode(tail).startswith("<|im_end|>")  # the tail is the turn's end, not everything from </think> on
    assert r1.convert_tokens_to_ids("</think>") not in tail


def test_on_policy_spans_of_a_sample_opening_with_think(r1, qwen):
    """A student sample that opens with `<think>` (the student's tokenizer has the tag as a token; the teacher's
    spells it as text) gets spans over the whole text, not 0."""
    s_pieces = [TokenBytes(r1).pieces[i] for i in r1(COMPLETION, add_special_tokens=False)["input_ids"]]
    t_pieces = [TokenBytes(qwen).pieces[i] for i in qwen(COMPLETION, add_special_tokens=False)["input_ids"]]
    t_span, s_span, n = spans(t_pieces, s_pieces)
    assert n > 0.5 * len(s_pieces) and (s_span >= 0).mean() > 0.95 and (t_span >= 0).mean() > 0.95
