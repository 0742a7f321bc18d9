"""The NER word-class tagger (sslflow.text.wordclasses): its layer 0 against BERT's own, and what the classes add
over the classical per-word features."""

import numpy as np
import torch

from sslflow.text import baselines, wordclasses
from sslflow.text.config import BertSize
from sslflow.text.decode import decode
from sslflow.text.models import bert_config, build_bert
from sslflow.text.tokenizer import train_wordpiece

TAGS = ["O", "B-PER", "I-PER"]


def test_input_states_are_berts_layer_0():
    torch.manual_seed(0)
    bert = build_bert(bert_config(BertSize(hidden_size=16, layers=1, heads=2, intermediate_size=32), 50, 12)).eval()
    with torch.no_grad():  # BERT's LayerNorm starts at weight 1, bias 0: give them values that would show a slip
        bert.embeddings.LayerNorm.weight.uniform_(0.5, 1.5)
        bert.embeddings.LayerNorm.bias.uniform_(-0.5, 0.5)
    ids = np.random.default_rng(0).integers(0, 50, size=(3, 12))
    with torch.no_grad():
        expected = bert.embeddings(input_ids=torch.as_tensor(ids)).numpy()
    model = wordclasses.tables(bert)
    np.testing.assert_allclose(wordclasses.input_states(model, ids), expected, atol=1e-5)


def test_nearest_centroid_and_no_class_for_words_past_the_length():
    model = {"centroids": np.array([[0.0, 0.0], [10.0, 10.0]])}
    states = np.array([[1.0, -1.0], [9.0, 11.0], [np.nan, np.nan]])
    assert wordclasses.assign(model, states).tolist() == [0, 1, -1]


def test_word_classes_tag_names_the_labeled_sentences_never_showed():
    """A language where names and things look alike (lowercase, same neighbours): only the encoder knows which
    is which (here: names' embeddings point one way, things' the other). Trained on two names and two things, the
    tagger tags unseen names and things right; the classical features cannot tell them apart."""
    names, things = ["alice", "bob", "dave", "erin"], ["table", "chair", "stool", "shelf"]
    corpus = [f"{w} runs" for w in names + things] * 20
    tokenizer = train_wordpiece(corpus, vocab_size=200, min_frequency=2, lowercase=True)
    torch.manual_seed(0)
    bert = build_bert(bert_config(BertSize(hidden_size=8, layers=1, heads=2, intermediate_size=16), 200, 16))
    with torch.no_grad():
        bert.embeddings.word_embeddings.weight.normal_(0, 0.05)
        bert.embeddings.position_embeddings.weight.zero_()
        for words, sign in ((names, 1.0), (things, -1.0)):
            for w in words:
                bert.embeddings.word_embeddings.weight[tokenizer.token_to_id(w), 0] = 3 * sign
    pool = [[w, "runs"] for w in names + things]
    labeled = [["alice", "runs"], ["bob", "runs"], ["table", "runs"], ["chair", "runs"]]
    tags = [[1, 0], [1, 0], [0, 0], [0, 0]]
    unseen = [["dave", "runs"], ["stool", "runs"], ["erin", "runs"], ["shelf", "runs"]]
    expected = [["B-PER", "O"], ["O", "O"], ["B-PER", "O"], ["O", "O"]]

    tagger = wordclasses.fit_tagger(bert, tokenizer, pool, labeled, tags, num_tags=3, classes=2, max_length=16,
                                    c=10.0, seed=0)
    assert [decode(p, TAGS, "viterbi") for p in wordclasses.predict(tagger, tokenizer, unseen)] == expected

    classical = baselines.fit_word_logreg(labeled, tags, 3, 10.0, 0)
    found = [decode(p, TAGS, "viterbi") for p in baselines.predict_words(classical, unseen)]
    assert found[0] == found[1] and found != expected  # an unseen name and an unseen thing look the same to it
