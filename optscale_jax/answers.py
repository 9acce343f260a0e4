"""Answer extraction: the final answer of a completion and the bare gold answer.

A leaf module (no imports from the package): the pool readers (:mod:`optscale_jax.io`),
grading (:mod:`optscale_jax.grading`) and the live loop use these rules.

* :func:`extract_answer` takes the content of the **last** ``\\boxed{...}`` of a
  completion, with nested braces, exactly as the OptScale authors extract it
  (``rule="official"``, the default: the string their majority vote counts); the
  ``"lenient"`` rule also reads ``\\fbox{...}``, ``\\boxed 5`` and ``\\boxed {x}``, strips
  whitespace and gives ``None`` for an empty box.
* :func:`extract_gold` reduces a GSM8K worked solution (``... #### 42``, the
  :data:`GSM8K_ANSWER_MARK` rule) to its number and unwraps a boxed gold answer.
"""

from __future__ import annotations

__all__ = [
    "EXTRACTION_RULES",
    "GSM8K_ANSWER_MARK",
    "extract_answer",
    "extract_boxed",
    "extract_boxed_official",
    "extract_gold",
]

#: GSM8K's gold answers are worked solutions ending in ``#### <number>``.
GSM8K_ANSWER_MARK = "####"

_BOX_COMMANDS = ("\\boxed", "\\fbox")


def _boxed_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of the content of every complete ``\\boxed{}``/``\\fbox{}``."""
    spans: list[tuple[int, int]] = []
    i = 0
    n = len(text)
    while i < n:
        j = text.find("\\", i)
        if j < 0:
            break
        cmd = next((c for c in _BOX_COMMANDS if text.startswith(c, j)), None)
        if cmd is None:
            i = j + 1
            continue
        k = j + len(cmd)
        while k < n and text[k] in " \t":
            k += 1
        if k < n and text[k] == "{":
            depth = 0
            m = k
            while m < n:
                ch = text[m]
                if ch == "\\" and m + 1 < n and text[m + 1] in "{}":
                    m += 2  # escaped brace \{ or \}: part of the content
                    continue
                if ch == "{":
                    depth += 1
                elif ch == "}":
                    depth -= 1
                    if depth == 0:
                        break
                m += 1
            if depth == 0 and m < n:
                spans.append((k + 1, m))
                i = m + 1
                continue
            i = k + 1  # unbalanced (truncated) box: skip it
            continue
        if cmd == "\\boxed" and k > j + len(cmd) and k < n:
            # "\boxed 5": the argument is the next token
            m = k
            while m < n and not text[m].isspace() and text[m] not in "$.,;":
                m += 1
            if m > k:
                spans.append((k, m))
            i = m
            continue
        i = k
    return spans


def extract_boxed(text: str | None) -> str | None:
    """Content of the last complete ``\\boxed{...}`` or ``\\fbox{...}`` in ``text``.

    Nested braces are matched (``\\boxed{\\frac{1}{2}}`` gives ``\\frac{1}{2}``); escaped
    braces ``\\{``/``\\}`` are content; an unclosed box (a truncated completion) is
    ignored; ``\\boxed 5`` (no braces) gives ``5``.

    Args:
        text: a completion.

    Returns:
        The stripped content, or ``None`` when there is no complete box.

    Examples:
        >>> extract_boxed(r"so \\boxed{1} or rather \\boxed{\\frac{1}{2}}.")
        '\\\\frac{1}{2}'
        >>> extract_boxed("no box") is None
        True
    """
    if not text:
        return None
    spans = _boxed_spans(text)
    if not spans:
        return None
    a, b = spans[-1]
    return text[a:b].strip()


def extract_boxed_official(text: str | None) -> str | None:
    """The OptScale authors' extraction: content of the last ``\\boxed{...}``, verbatim.

    Same strings as the authors' ``get_answer`` (``SC/utils.py``): only ``\\boxed{``
    written with its brace right after it counts; the content is the balanced-brace
    text up to the matching ``}`` (a backslash does not escape a brace), returned
    without stripping, ``""`` for an empty box; matches do not overlap (a box inside a
    matched box is part of its content) and a box whose braces never close is skipped,
    the search going on one character later (so a complete box inside it still counts).

    Args:
        text: a completion.

    Returns:
        The content of the last complete box, or ``None``.

    Examples:
        >>> extract_boxed_official(r"\\boxed{1} then \\boxed{ \\frac{1}{2} }")
        ' \\\\frac{1}{2} '
        >>> extract_boxed_official(r"\\fbox{3} or \\boxed 5") is None
        True
    """
    if not text:
        return None
    last: str | None = None
    key = "\\boxed{"
    n = len(text)
    pos = text.find(key)
    while pos >= 0:
        start = pos + len(key)
        depth = 0
        m = start
        end = -1
        while m < n:
            ch = text[m]
            if ch == "{":
                depth += 1
            elif ch == "}":
                if depth == 0:
                    end = m
                    break
                depth -= 1
            m += 1
        if end >= 0:
            last = text[start:end]
            pos = text.find(key, end + 1)
        else:
            pos = text.find(key, pos + 1)
    return last


#: Answer extraction rules of :func:`extract_answer`.
EXTRACTION_RULES: tuple[str, ...] = ("official", "lenient")


def extract_answer(completion: str | None, rule: str = "official") -> str | None:
    """Final answer of a completion: the last box's content, ``None`` when there is none.

    Args:
        completion: the completion text (``None`` or empty gives ``None``).
        rule: ``"official"`` (default): the authors' string, verbatim
            (:func:`extract_boxed_official`; an empty box gives ``""``);
            ``"lenient"``: :func:`extract_boxed` (also ``\\fbox``, ``\\boxed 5``,
            ``\\boxed {x}``), stripped, an empty box giving ``None``.

    Returns:
        The answer string, or ``None``.

    Examples:
        >>> extract_answer(r"\\boxed{ 7 }"), extract_answer(r"\\boxed{ 7 }", rule="lenient")
        (' 7 ', '7')
    """
    if rule == "official":
        return extract_boxed_official(completion)
    if rule != "lenient":
        raise ValueError(f"extract_answer: rule must be one of {EXTRACTION_RULES}, got {rule!r}")
    ans = extract_boxed(completion)
    return ans if ans else None


def extract_gold(answer: str) -> str:
    """Normalise a gold answer: GSM8K's ``"... #### 1,234"`` becomes ``"1234"``.

    Other answers (MATH, AIME, AMC) are returned stripped; a gold answer written as
    ``\\boxed{x}`` is unwrapped.

    Args:
        answer: the dataset's answer field.

    Returns:
        The bare gold answer.

    Examples:
        >>> extract_gold("She makes 9 * 2 = $18.\\n#### 1,018")
        '1018'
        >>> extract_gold(" \\\\frac{1}{2} ")
        '\\\\frac{1}{2}'
    """
    text = str(answer)
    if GSM8K_ANSWER_MARK in text:
        return text.rsplit(GSM8K_ANSWER_MARK, 1)[1].strip().replace(",", "").rstrip(".").strip()
    text = text.strip()
    if text.startswith(("\\boxed", "\\fbox")):
        inner = extract_boxed(text)
        if inner is not None:
            return inner
    return text
