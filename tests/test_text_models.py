"""Small text models: MLM learns in 20 steps, heads have the right shapes, saved models rebuild exactly."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from sslflow.config import Base, Optim
from sslflow.errors import SslflowError
from sslflow.optim import build_optimizer, build_schedule
from sslflow.runtime import resolve
from sslflow.text.classify import predict_documents
from sslflow.text.config import BertSize
from sslflow.text.encode import pack_chunks
from sslflow.text.mlm import MaskedChunks, build_mlm, masked_loss, masker, mlm_step, perplexity
from sslflow.text.models import (
    SequenceClassifier,
    TokenClassifier,
    bert_config,
    build_bert,
    load_classifier,
    load_encoder,
    mean_pool,
    save_classifier,
    save_encoder,
)
from sslflow.text.ner import find_entities, predict_words
from sslflow.text.tokenizer import for_transformers, train_wordpiece
from sslflow.train import fit

CORPUS = [
    f"the {a} {b} went to the {c} on day {i}"
    for i, (a, b, c) in enumerate([("red", "fox", "forest"), ("blue", "bird", "sky")] * 40)
]
CPU = resolve(Base(device="cpu", precision="fp32"))


@pytest.fixture(scope="module")
def tokenizer():
    return train_wordpiece(CORPUS, vocab_size=120, min_frequency=1, lowercase=True)


@pytest.fixture(scope="module")
def config(tokenizer):
    return bert_config(
        BertSize(hidden_size=32, layers=1, heads=2, intermediate_size=64, dropout=0.0),
        tokenizer.get_vocab_size(),
        16,
    )


def test_a_batch_with_nothing_masked_has_zero_loss_and_a_gradient_for_every_parameter(config):
    # Under DDP every parameter must receive a gradient on every step, masked tokens or not.
    model = build_mlm(config)
    ids = torch.randint(5, config["vocab_size"], (2, 16))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.full_like(ids, -100)}
    loss = masked_loss(model, batch)
    loss.backward()
    assert loss.item() == 0.0
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing


def test_twenty_mlm_steps_lower_the_loss(tokenizer, config):
    torch.manual_seed(0)
    hf = for_transformers(tokenizer)
    ids = pack_chunks(tokenizer, CORPUS, max_length=16, stride=0)
    model = build_mlm(config)
    before = perplexity(model, ids, hf, probability=0.15, seed=0, batch_size=32, runtime=CPU)
    assert before == perplexity(
        model, ids, hf, probability=0.15, seed=0, batch_size=32, runtime=CPU
    )  # fixed masks
    loader = DataLoader(MaskedChunks(ids, masker(hf, 0.15)), batch_size=16, shuffle=True)
    optim = Optim(lr=3e-3, weight_decay=0.0, schedule="constant")
    optimizer = build_optimizer([{"params": list(model.parameters())}], optim)
    fit(
        model=model, step=mlm_step(model), loader=loader, optimizer=optimizer,
        scheduler=build_schedule(optimizer, optim, 20, 20), epochs=100, runtime=CPU, log=lambda m, s: None,
        max_steps=20, prefix="t",
    )
    after = perplexity(model, ids, hf, probability=0.15, seed=0, batch_size=32, runtime=CPU)
    assert after < 0.5 * before


def test_heads_shapes_and_predictions(tokenizer, config):
    torch.manual_seed(0)
    ids = torch.randint(5, config["vocab_size"], (3, 16))
    mask = torch.ones_like(ids)
    assert SequenceClassifier(build_bert(config), 4)(ids, mask).shape == (3, 4)
    assert TokenClassifier(build_bert(config), 5)(ids, mask).shape == (3, 16, 5)

    classifier = SequenceClassifier(build_bert(config), 4)
    docs = predict_documents(classifier, tokenizer, ["the red fox " * 20, ""], max_length=16, stride=4, runtime=CPU)
    assert docs.shape == (2, 4) and np.allclose(docs.sum(1), 1.0)
    tagger = TokenClassifier(build_bert(config), 3)
    words = predict_words(tagger, tokenizer, [["the", "fox"], ["day"] * 30, []], max_length=16, runtime=CPU)
    assert [w.shape for w in words] == [(2, 3), (30, 3), (0, 3)]
    assert (words[1][14:, 0] == 1.0).all()  # past max_length - 2 word pieces: "O"
    found = find_entities(
        tagger, tokenizer, ["The red fox, in the sky.", ""], ["O", "B-X", "I-X"], max_length=16, decoding="viterbi",
        runtime=CPU,
    )
    for entity in found[0]:
        assert "The red fox, in the sky."[entity["start"] : entity["end"]] == entity["text"]
    assert found[1] == []


def test_sequence_head_sees_standardised_features_and_trains_on_a_single_sequence(config):
    torch.manual_seed(0)
    model = SequenceClassifier(build_bert(config), 4).train()
    seen = []
    model.norm.register_forward_hook(lambda module, inputs, output: seen.append((inputs[0].detach(), output.detach())))
    ids = torch.randint(5, config["vocab_size"], (8, 16))
    model(ids, ids != 0)
    pooled, standardised = seen[0]
    torch.testing.assert_close(pooled, mean_pool(model.bert(ids, ids != 0).last_hidden_state, ids != 0).detach())
    mean, var = pooled.mean(0), pooled.var(0, unbiased=False)  # per feature, over the batch
    torch.testing.assert_close(standardised, (pooled - mean) / torch.sqrt(var + model.norm.eps))
    assert model.norm.num_batches_tracked == 1  # the batch also moved the running statistics

    model(ids[:1], ids[:1] != 0).sum().backward()  # a batch of one: the running statistics, no error
    assert model.norm.num_batches_tracked == 1 and model.head.weight.grad is not None


def test_saved_models_rebuild_exactly(tmp_path, tokenizer, config):
    torch.manual_seed(0)
    model = TokenClassifier(build_bert(config), 3).eval()
    save_classifier(model, config, "token-classification", tmp_path, "ssl")
    ids = torch.randint(5, config["vocab_size"], (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(load_classifier(tmp_path, "ssl")(ids, ids != 0), model(ids, ids != 0))
    save_encoder(model.bert, config, "sha-a", tmp_path)
    assert load_encoder(tmp_path, "sha-a")[1] == config
    with pytest.raises(SslflowError, match="pretrained with another tokenizer"):
        load_encoder(tmp_path, "sha-b")

    classifier = SequenceClassifier(build_bert(config), 4)
    classifier.train()(ids, ids != 0)  # non-trivial running statistics, saved with the weights
    save_classifier(classifier.eval(), config, "text-classification", tmp_path, "doc")
    with torch.no_grad():
        torch.testing.assert_close(load_classifier(tmp_path, "doc")(ids, ids != 0), classifier(ids, ids != 0))
