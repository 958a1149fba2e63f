"""Span rewards placed on response tokens: a span's value lands on the token that completes its last character.

A reward's spans are character ranges of the decoded response (`rewards.pool`: (char_start, char_end, value)).
The token of character c is the first response position whose tokens, decoded up to and including it, reproduce
the text up to and including c. With byte-level tokens (Qwen's byte-level BPE, SentencePiece byte fallback) a
multi-byte character (CJK, emoji) may be split over several tokens: its span ends on the last of them.

Two ways to find it:
  offsets   re-encode the decoded text with the fast tokenizer's offsets (`return_offsets_mapping`); used when
            the re-encoded ids are the sampled non-special ids, then character c's token is the last one whose
            offsets cover c (the tokens of a split character all cover it).
  prefixes  otherwise (a tokenization the model sampled that re-encoding does not reproduce, or offsets that do
            not cover c): a binary search over the prefix length j for the shortest prefix of the masked ids
            whose decoding starts with text[:c + 1] (O(log k) decodes per span, a few more where a prefix ends
            inside a multi-byte character: `_prefix_search`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from shuffle_r1_jax.rewards.pool import Span


def special_token_ids(tokenizer) -> frozenset[int]:
    """The ids decoding with `skip_special_tokens=True` drops: the added tokens marked special, and the named ones."""
    added = {i for i, token in tokenizer.added_tokens_decoder.items() if token.special}
    return frozenset(added | set(tokenizer.all_special_ids))


def _offset_tokens(tokenizer, text: str, kept: list[int]) -> list[tuple[int, int]] | None:
    """Character offsets `[(start, end)] * len(kept)` of the kept ids in `text`, or None when re-encoding `text`
    does not give back `kept`."""
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    if list(encoded["input_ids"]) != kept:
        return None
    return [tuple(offset) for offset in encoded["offset_mapping"]]


def _prefix_search(tokenizer, ids: list[int], text: str, char: int) -> int:
    """The smallest j in [1, len(ids)] whose prefix `ids[:j]` decodes to a text starting with text[:char + 1]
    (len(ids) when none does: the last token).

    A binary search over j. A prefix that ends inside a multi-byte character decodes with a trailing U+FFFD and may
    spoil characters before it (SentencePiece's byte fallback replaces a whole run of byte tokens that is not valid
    UTF-8), so a miss there says nothing: the search steps back to the nearest prefix that matches (a hit) or
    decodes without a trailing U+FFFD (a real miss: the decoding of such a prefix is a prefix of `text`).
    """
    target = text[: char + 1]
    low, high = 1, len(ids)
    while low < high:
        mid = j = (low + high) // 2
        while True:
            decoded = tokenizer.decode(ids[:j], skip_special_tokens=True)
            if decoded.startswith(target):
                high = j
                break
            if j == low or not decoded.endswith("\ufffd"):
                low = mid + 1
                break
            j -= 1
    return low


def char_token_positions(tokenizer, ids: np.ndarray, text: str, chars: Sequence[int]) -> np.ndarray:
    """Index into `ids` of the token that completes each character of `chars` (see the module docstring).

    Args:
      tokenizer: a Hugging Face tokenizer (fast for the offsets; any for the prefix search).
      ids: `int[k]` the response's valid token ids, special tokens included; `text` is their decoding with
        `skip_special_tokens=True`.
      text: the decoded response.
      chars: character indices into `text`, each in [0, len(text)).

    Returns:
      `int64[len(chars)]` indices into `ids`.
    """
    ids = [int(i) for i in ids]
    special = special_token_ids(tokenizer)
    kept_at = [j for j, i in enumerate(ids) if i not in special]
    offsets = _offset_tokens(tokenizer, text, [ids[j] for j in kept_at]) if tokenizer.is_fast else None
    positions = []
    for c in chars:
        covering = [] if offsets is None else [k for k, (start, end) in enumerate(offsets) if start <= c < end]
        if covering:
            positions.append(kept_at[covering[-1]])
        else:
            positions.append(_prefix_search(tokenizer, ids, text, c) - 1)
    return np.asarray(positions, np.int64)


def span_token_rewards(
    tokenizer,
    tokens: np.ndarray,
    mask: np.ndarray,
    responses: Sequence[str],
    spans: Sequence[Sequence[Span] | None],
) -> np.ndarray:
    """Each response's span rewards at the response positions that complete the spans' last characters.

    Args:
      tokenizer: the tokenizer that decoded `responses` (`rollout.generate.decode_responses`).
      tokens: `int[r, L]` response tokens.
      mask: `int[r, L]` (or bool) response mask; `responses[i]` decodes the masked tokens of row i.
      responses: r decoded texts.
      spans: per response, its (char_start, char_end, value) triples with char_end <= len(response), or None.

    Returns:
      `float32[r, L]`: the sum of the values of the spans ending on each position; 0 elsewhere (all 0 without
      spans).
    """
    rewards = np.zeros(np.shape(tokens), np.float32)
    for row, (text, row_spans) in enumerate(zip(responses, spans)):
        if not row_spans:
            continue
        valid = np.flatnonzero(np.asarray(mask[row]).astype(bool))
        at = char_token_positions(tokenizer, np.asarray(tokens[row])[valid], text, [end - 1 for _, end, _ in row_spans])
        np.add.at(rewards[row], valid[at], np.asarray([value for _, _, value in row_spans], np.float32))
    return rewards
