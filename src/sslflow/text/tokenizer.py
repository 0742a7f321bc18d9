"""A WordPiece tokenizer trained here (no download), on the unlabeled pool only (Wu et al., 2016; BERT).

Saved as one `tokenizer.json` (the `tokenizers` format), which is all the logged model needs.
"""

import heapq
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from sslflow.errors import SslflowError

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL = [PAD, UNK, CLS, SEP, MASK]  # ids 0..4 in this order
PREFIX = "##"  # marks a piece that continues a word


def train_wordpiece(
    texts: Iterable[str], *, vocab_size: int, min_frequency: int, lowercase: bool
) -> Tokenizer:
    """BERT's normalizer and pre-tokenizer, and a WordPiece vocabulary learned from `texts`: the special
    tokens, every character (as a word start, and as a `##` continuation), then the most frequent adjacent
    pair merged, again and again, until `vocab_size` tokens or no pair is seen `min_frequency` times.

    The same as `tokenizers`' WordPieceTrainer, except that it is deterministic: that trainer breaks ties
    between equally frequent pairs by internal ids that follow hash-map order, so two runs on the same text
    can give different ids and even different vocabularies. Here a tie goes to the alphabetically first pair
    and ids follow the order in which tokens were learned."""
    tokenizer = Tokenizer(models.WordPiece(unk_token=UNK))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words: Counter[str] = Counter()
    for text in texts:
        normal = tokenizer.normalizer.normalize_str(text)
        words.update(word for word, _ in tokenizer.pre_tokenizer.pre_tokenize_str(normal))
    tokenizer.model = models.WordPiece(_learn_vocab(words, vocab_size, min_frequency), unk_token=UNK)
    tokenizer.add_special_tokens(SPECIAL)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}", special_tokens=[(CLS, SPECIAL.index(CLS)), (SEP, SPECIAL.index(SEP))]
    )
    tokenizer.decoder = decoders.WordPiece()
    return tokenizer


def _learn_vocab(words: Counter[str], vocab_size: int, min_frequency: int) -> dict[str, int]:
    """Token -> id: SPECIAL, the sorted alphabet, then pair merges (a heap of (-count, pair); stale entries,
    whose count has changed since they were pushed, are skipped when popped)."""
    ordered = sorted(words)
    spelled = [[w[0], *(PREFIX + c for c in w[1:])] for w in ordered]
    counts = [words[w] for w in ordered]
    vocab = dict.fromkeys(SPECIAL + sorted({s for symbols in spelled for s in symbols}))
    pairs: Counter[tuple[str, str]] = Counter()
    where: dict[tuple[str, str], set[int]] = {}
    for i, symbols in enumerate(spelled):
        for pair in zip(symbols, symbols[1:], strict=False):
            pairs[pair] += counts[i]
            where.setdefault(pair, set()).add(i)
    heap = [(-n, pair) for pair, n in pairs.items()]
    heapq.heapify(heap)
    while len(vocab) < vocab_size and heap:
        negative, pair = heapq.heappop(heap)
        if pairs.get(pair, 0) != -negative:
            continue  # stale
        if -negative < min_frequency:
            break
        merged = pair[0] + pair[1].removeprefix(PREFIX)
        vocab.setdefault(merged)
        changed = set()
        for i in sorted(where.pop(pair)):
            old = spelled[i]
            new, j = [], 0
            while j < len(old):
                if j + 1 < len(old) and (old[j], old[j + 1]) == pair:
                    new.append(merged)
                    j += 2
                else:
                    new.append(old[j])
                    j += 1
            for p in zip(old, old[1:], strict=False):
                pairs[p] -= counts[i]
                changed.add(p)
            for p in zip(new, new[1:], strict=False):
                pairs[p] += counts[i]
                where.setdefault(p, set()).add(i)
                changed.add(p)
            spelled[i] = new
        for p in changed:
            if pairs[p] > 0:
                heapq.heappush(heap, (-pairs[p], p))
            else:
                del pairs[p]
                where.pop(p, None)
    return {token: i for i, token in enumerate(vocab)}


def load_tokenizer(path: Path) -> Tokenizer:
    if not Path(path).is_file():
        raise SslflowError(f"tokenizer not found: {path}; run the preprocess stage first")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as err:  # tokenizers raises a bare Exception on a malformed file
        raise SslflowError(f"cannot read tokenizer {path}: {err}") from None


def for_transformers(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    """The same tokenizer behind the interface transformers' data collators expect."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token=PAD,
        unk_token=UNK,
        cls_token=CLS,
        sep_token=SEP,
        mask_token=MASK,
    )
