"""Prompts, answers, code extraction and prompt-masked encoding (nasloop/prompts.py)."""

from __future__ import annotations

import pytest
from candidates import GOOD_NET

from nasloop import prompts
from nasloop.bootstrap.tokenizer import train_tokenizer
from nasloop.v1 import common_pb2


def spec(**kw: object) -> common_pb2.TaskSpec:
    base = dict(
        task="img-classification",
        dataset="digits",
        in_shape=[16, 3, 32, 32],
        out_shape=[10],
        parameter_budget=200000,
    )
    return common_pb2.TaskSpec(**{**base, **kw})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    texts = [GOOD_NET, prompts.render_prompt(spec()), prompts.chat_messages(spec())[1]["content"]]
    return train_tokenizer(texts * 4, vocab_size=400, model_max_length=2048)


API_TERMS = (
    "supported_hyperparameters()",
    "class Net(nn.Module)",
    "__init__(self, in_shape, out_shape, prm, device)",
    "train_setup(self, prm)",
    "learn(self, train_data)",
    "forward(self, x)",
    "lr",
    "momentum",
    "dropout",
    "batch",
)


def test_plain_prompt_states_the_task() -> None:
    text = prompts.render_prompt(spec())
    for term in ("img-classification", "digits", "(16, 3, 32, 32)", "(10,)", "200000", *API_TERMS):
        assert term in text, term
    assert "accuracy" not in text.lower() and "```" not in text
    assert len(text) < 600  # the bootstrap LM has a short context


def test_plain_prompt_optional_parts() -> None:
    text = prompts.render_prompt(
        spec(parameter_budget=0, reference_accuracy=0.4567, reference_code=GOOD_NET)
    )
    assert "parameters" not in text.split("\n")[1]
    assert "0.4567" in text
    assert prompts.render_answer(GOOD_NET) in text
    assert prompts.render_prompt(spec()) == prompts.render_prompt(spec())  # deterministic


def test_chat_messages() -> None:
    msgs = prompts.chat_messages(spec(reference_accuracy=0.5, reference_code=GOOD_NET))
    assert [m["role"] for m in msgs] == ["system", "user"]
    user = msgs[1]["content"]
    for term in ("img-classification", "digits", "(16, 3, 32, 32)", "(10,)", "200000", "0.5000"):
        assert term in user, term
    for term in API_TERMS:
        assert term in user, term
    assert "```python" in user and GOOD_NET.strip() in user


def test_render_prompt_templates(tokenizer) -> None:  # type: ignore[no-untyped-def]
    text = prompts.render_prompt(spec(), "instruct", tokenizer)
    assert text.startswith(tokenizer.bos_token)
    assert prompts.chat_messages(spec())[1]["content"] in text
    assert text.endswith("### Assistant:\n")  # add_generation_prompt
    with pytest.raises(ValueError, match="needs a tokenizer"):
        prompts.render_prompt(spec(), "instruct")
    with pytest.raises(ValueError, match="unknown prompt template"):
        prompts.render_prompt(spec(), "fancy")
    assert prompts.TEMPLATES == ("plain", "instruct")


def test_render_answer_round_trips() -> None:
    answer = prompts.render_answer("\n\n" + GOOD_NET + "\n\n")
    assert answer.startswith("```python\n") and answer.endswith("\n```")
    assert prompts.extract_code(answer) == GOOD_NET.strip()


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("```python\nsmall = 1\n```\ntext\n```python\nlarger = 22222\n```", "larger = 22222"),
        # A python block wins over a larger block of another language.
        ("```python\nx = 1\n```\n```text\n" + "y" * 100 + "\n```", "x = 1"),
        ("```py\nx = 1\n```", "x = 1"),
        # No python block: the largest fenced block of any language.
        ("```\na = 1\n```\n```js\nlonger_one();\n```", "longer_one();"),
        ("Sure:\n```Python\nimport torch\n```\nDone.", "import torch"),
        # No fenced block, or one never closed: nothing (never repaired).
        ("import torch\nclass Net: pass", None),
        ("```python\nimport torch\nclass Net:\n    pass", None),
        ("", None),
    ],
)
def test_extract_code(text: str, want: str | None) -> None:
    assert prompts.extract_code(text) == want


def test_encode_pair_masks_the_prompt(tokenizer) -> None:  # type: ignore[no-untyped-def]
    prompt = prompts.render_prompt(spec())
    answer = prompts.render_answer(GOOD_NET)
    enc = prompts.encode_pair(tokenizer, prompt, answer, max_length=4096)
    p = prompts.encode_prompt(tokenizer, prompt)
    a = tokenizer(answer, add_special_tokens=False)["input_ids"]
    assert p[0] == tokenizer.bos_token_id
    assert enc["input_ids"] == p + a + [tokenizer.eos_token_id]
    assert enc["attention_mask"] == [1] * len(enc["input_ids"])
    assert enc["labels"][: len(p)] == [-100] * len(p)
    assert enc["labels"][len(p) :] == enc["input_ids"][len(p) :]
    assert enc["labels"][-1] == tokenizer.eos_token_id and -100 not in enc["labels"][len(p) :]
    assert not enc.truncated
    assert tokenizer.decode(enc["input_ids"][len(p) : -1]) == answer


def test_encode_pair_instruct_prompt_has_one_bos(tokenizer) -> None:  # type: ignore[no-untyped-def]
    prompt = prompts.render_prompt(spec(), "instruct", tokenizer)
    ids = prompts.encode_pair(tokenizer, prompt, "```python\nx = 1\n```", 4096)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and ids[1] != tokenizer.bos_token_id


def test_encode_pair_truncates_the_answer(tokenizer) -> None:  # type: ignore[no-untyped-def]
    prompt = prompts.render_prompt(spec())
    p = prompts.encode_prompt(tokenizer, prompt)
    enc = prompts.encode_pair(tokenizer, prompt, prompts.render_answer(GOOD_NET), len(p) + 10)
    assert enc.truncated
    assert len(enc["input_ids"]) == len(enc["labels"]) == len(p) + 10
    assert enc["labels"][: len(p)] == [-100] * len(p)
    assert tokenizer.eos_token_id not in enc["input_ids"]  # a cut answer is not an ended one
    with pytest.raises(prompts.PromptTooLongError, match="no room for the answer"):
        prompts.encode_pair(tokenizer, prompt, "x", len(p))


def parent(mode: int, **kw: object) -> common_pb2.Parent:
    base = dict(id="r-c1-3", code=GOOD_NET, accuracy=0.8125, parameters=54321, mode=mode)
    return common_pb2.Parent(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "mode, ask",
    [(common_pb2.EDIT_MODE_FULL, "### Code:"), (common_pb2.EDIT_MODE_DIFF, "### Diff:")],
)
def test_plain_prompt_with_a_parent(mode: int, ask: str) -> None:
    text = prompts.render_prompt(spec(parent=parent(mode)))
    assert text.startswith(prompts.render_prompt(spec()).removesuffix("### Code:\n"))
    assert "### Parent: accuracy 0.8125, 54321 parameters" in text
    assert prompts.render_answer(GOOD_NET) in text
    assert "Goal: accuracy above 0.8125 with at most 200000 parameters." in text
    assert text.endswith(ask + "\n") and text.count("### Code:") + text.count("### Diff:") == 1
    # without a task budget the goal keeps the parent's size
    assert "at most 54321 parameters" in prompts.render_prompt(
        spec(parameter_budget=0, parent=parent(mode))
    )


def test_chat_messages_with_a_parent() -> None:
    full = prompts.chat_messages(spec(parent=parent(common_pb2.EDIT_MODE_FULL)))[1]["content"]
    diff = prompts.chat_messages(spec(parent=parent(common_pb2.EDIT_MODE_DIFF)))[1]["content"]
    for user in (full, diff):
        assert "0.8125 test accuracy" in user and "54321 trainable parameters" in user
        assert GOOD_NET.strip() in user
    assert user.count("```python") == 1
    assert "complete improved module" in full and "```diff" not in full
    assert "```diff block" in diff and "--- a/net.py" in diff


@pytest.mark.parametrize(
    "text, want",
    [
        ("```diff\n--- a\n+++ b\n```", "--- a\n+++ b\n"),
        ("```patch\nx\n```\n```diff\nlonger\n```", "longer\n"),
        ("```python\nx = 1\n```", None),
        ("```diff\n--- a\n+++ b\n", None),  # not closed: nothing repaired
    ],
)
def test_extract_diff(text: str, want: str | None) -> None:
    assert prompts.extract_diff(text) == want
