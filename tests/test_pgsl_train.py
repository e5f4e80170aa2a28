"""pgsl.train, pgsl.client, pgsl.server: the blocks, what crosses the wire, an end-to-end run that learns,
resume equivalence, and bad options. The distributed runs are in test_pgsl_distributed.py."""

import os

import pytest
import torch
import torch.nn.functional as F

from pgsl import models
from pgsl.defenses import distance_correlation
from pgsl.server import Server
from pgsl.config import Config
from pgsl.errors import ConfigError, PgslError, RunError
from pgsl.runs import restore
from pgsl.train import train
from pgsl.transport import LocalHub

import pgsl_ext.ops


def tiny(tmp_path, name="run", **kw) -> Config:
    """A run small enough for CI: 128 training images, 64 validation and test images."""
    base = dict(out=str(tmp_path / name), epochs=1, batch_size=32, train_subset=128, eval_subset=64, progress=False)
    if kw.get("defense", "pgsl") in ("pgsl", "pgsl+noise"):
        base.update(rpca_iters=5, surrogate_epochs=1)
    base.update(kw)
    return Config(**base)


# --------------------------------------------------------------------------- blocks


def test_shapes():
    x = torch.rand(3, 5, 14, 14)
    a = models.ClientNet(5)(x)
    assert a.shape == (3, 64, 14, 14)
    low = pgsl_ext.ops.rpca(a.detach(), mu=0.55, max_iter=3).low_rank
    out = models.PGSLServerNet(10)(a, low)
    assert set(out) == {"attacked", "fusion", "recovered"} and all(z.shape == (3, 10) for z in out.values())
    assert models.PlainServerNet(10)(torch.rand(3, 64, 28, 28))["plain"].shape == (3, 10)
    assert models.SmallCNN(3, 64)(torch.rand(2, 1, 64, 64)).shape == (2, 3)


@pytest.mark.parametrize("rpca_grad", ["detach", "identity"])
def test_only_the_fusion_stream_gradient_reaches_the_client(rpca_grad):
    cfg = Config(rpca_grad=rpca_grad, rpca_iters=5)
    torch.manual_seed(0)
    server = Server(cfg, num_classes=10)
    torch.manual_seed(0)
    twin = Server(cfg, num_classes=10)  # the same parameters and dropout stream
    a = torch.randn(4, 64, 14, 14)
    y = torch.tensor([0, 1, 2, 3])
    grad = server.train_step(a.clone(), y)[0]

    # the twin's forward (the same dropout masks), each stream's loss differentiated alone
    torch.set_rng_state(twin.rng_state)
    a2 = a.clone().requires_grad_(True)
    twin.net.train()
    out = twin.net(a2, twin.low_rank(a2))
    per_stream = {s: torch.autograd.grad(F.cross_entropy(z, y), a2, retain_graph=True, allow_unused=True)[0] for s, z in out.items()}
    assert per_stream["attacked"] is None and per_stream["recovered"] is None
    assert per_stream["fusion"] is not None and float(per_stream["fusion"].abs().sum()) > 0
    torch.testing.assert_close(grad, per_stream["fusion"], rtol=1e-5, atol=1e-7)


def test_adaptive_fusion_weights():
    fusion = models.AdaptiveFusion([0.5, 0.3, 0.2])
    assert torch.allclose(fusion.weights, torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64))
    labels = torch.tensor([0, 0, 1, 1])
    probs = torch.zeros(4, 3, 2)
    probs[:, 0] = F.one_hot(labels, 2).float()  # stream 0: perfect (true-class score 1)
    probs[:, 1] = 0.5  # stream 1: 0.5 everywhere
    probs[:, 2] = F.one_hot(1 - labels, 2).float()  # stream 2: always wrong (0)
    w = fusion.fit(probs, labels)
    expected = torch.tensor([0.5 * 1.0, 0.3 * 0.5, 0.0], dtype=torch.float64)
    torch.testing.assert_close(w, expected / expected.sum())
    assert torch.equal(fusion(probs).argmax(1), labels)


def test_distance_correlation():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 2, dtype=torch.float64, generator=g)
    assert abs(float(distance_correlation(x, 3 * x + 1)) - 1) < 1e-6  # invariant to scale and shift
    assert float(distance_correlation(x, x.square())) > 0.3  # dependent though uncorrelated
    assert float(distance_correlation(x, torch.randn(256, 2, dtype=torch.float64, generator=g))) < 0.2


# --------------------------------------------------------------------------- what crosses the wire


class RecordingHub(LocalHub):
    def __init__(self):
        super().__init__()
        self.log = []

    def link(self, rank):
        link = super().link(rank)
        send = link.send

        def recording_send(dst, kind, tensors=()):
            self.log.append((rank, dst, kind, [t.detach().clone() for t in tensors]))
            return send(dst, kind, tensors)

        link.send = recording_send
        return link


@pytest.mark.parametrize("defense", ["pgsl", "none", "arch"])
def test_what_crosses_the_wire(tmp_path, monkeypatch, defense):
    import pgsl.train as train_module

    hub = RecordingHub()
    monkeypatch.setattr(train_module, "LocalHub", lambda: hub)
    cfg = tiny(tmp_path, defense=defense, clients=2, train_subset=96)
    train(cfg)
    side = 14 if defense in ("pgsl", "arch") else 28
    kinds_to_server = set()
    for src, dst, kind, tensors in hub.log:
        for t in tensors:
            assert not (t.dim() == 4 and t.shape[1] == 1), f"an image-shaped tensor {tuple(t.shape)} crossed in {kind!r}"
        if dst == 0:  # activations (B, 64, side, side), labels, scores, epoch numbers
            kinds_to_server.add(kind)
            for t in tensors:
                assert t.dim() != 4 or tuple(t.shape[1:]) == (64, side, side), (kind, t.shape)
                assert t.dtype != torch.uint8, f"client weights sent to the server in {kind!r}"
        elif src == 0:  # gradients w.r.t. the activations, losses, counts, scores, fusion weights
            for t in tensors:
                small = t.numel() < 10_000  # any conv or FC weight of the server is larger
                assert small or (t.dim() == 4 and tuple(t.shape[1:]) == (64, side, side)), (kind, t.shape)
        else:  # client to client: the client half's weights, and nothing else
            assert kind == "state" and {src, dst} == {1, 2}
    assert kinds_to_server == {"hello", "train", "turn_end", "score", "fit_fusion", "epoch_end"}


# --------------------------------------------------------------------------- end to end


def test_pgsl_learns_on_mnist5k(tmp_path):
    cfg = tiny(tmp_path, train_subset=640, eval_subset=200, batch_size=32, rpca_iters=10, surrogate_epochs=2)
    metrics = train(cfg)
    # chance is 0.1; this budget (20 steps of 32 attacked digits, rpca capped at 10 iterations)
    # measured 0.455 fused (streams 0.37 / 0.435 / 0.47)
    assert metrics["test_accuracy"] > 0.3, metrics["test_accuracy"]
    assert set(metrics["stream_accuracy"]) == {"attacked", "fusion", "recovered"}
    assert abs(sum(metrics["weights"].values()) - 1) < 1e-9
    assert metrics["defense"] == "pgsl" and metrics["epochs"] == 1 and metrics["clients"] == 1
    assert len(metrics["seconds_per_epoch"]) == 1 and metrics["versions"]["torch"] == torch.__version__
    for name in ("metrics.json", "training.png", "client.json", "server.json", "client_epoch1.pt", "server_epoch1.pt", "client1_attack.pt"):
        assert os.path.exists(os.path.join(cfg.out, name)), name
    # checkpoints load with weights_only=True, and the restored run gives the recorded decision
    run = restore(cfg.out)
    test = run.dataset.test
    with torch.no_grad():
        probs = torch.stack([z.softmax(1) for z in run.server.net(*_server_inputs(run, test)).values()], 1)
    fused = (probs.double() * run.server.fusion.weights.view(1, -1, 1)).sum(1)
    assert abs(float((fused.argmax(1) == test.y).double().mean()) - metrics["test_accuracy"]) < 1e-9


def _server_inputs(run, split):
    a = run.client.held_activations("test", torch.arange(len(split)))
    return a, run.server.low_rank(a)


@pytest.mark.parametrize("defense", ["pgsl", "noise"])
def test_resume_ends_where_an_uninterrupted_run_ends(tmp_path, defense):
    straight = train(tiny(tmp_path, "straight", defense=defense, epochs=2))
    train(tiny(tmp_path, "resumed", defense=defense, epochs=1))
    resumed = train(tiny(tmp_path, "resumed", defense=defense, epochs=2, resume=True))
    assert resumed["test_accuracy"] == straight["test_accuracy"]
    for half in ("client", "server"):
        a = torch.load(tmp_path / "straight" / f"{half}_epoch2.pt", weights_only=True)[half]["net"]
        b = torch.load(tmp_path / "resumed" / f"{half}_epoch2.pt", weights_only=True)[half]["net"]
        for key in a:
            assert torch.equal(a[key], b[key]), f"{half} {key} differs after resume"


def test_nopeek_and_noise_change_training_and_vanish_at_strength_zero(tmp_path):
    """Each baseline defence acts on training (its losses leave plain split learning's), and at
    strength 0 it is plain split learning, bit for bit."""
    plain = train(tiny(tmp_path, "none", defense="none"))
    trace = plain["history"][0]["train_loss_trace"]
    for defense, strength in (("nopeek", "nopeek_weight"), ("noise", "noise_scale")):
        on = train(tiny(tmp_path, defense, defense=defense))
        off = train(tiny(tmp_path, f"{defense}-off", defense=defense, **{strength: 0.0}))
        assert on["defense"] == defense and "stream_accuracy" not in on
        assert on["history"][0]["train_loss_trace"] != trace, f"{defense} changed nothing in training"
        assert off["history"][0]["train_loss_trace"] == trace, f"{defense} at {strength} 0 is not plain split learning"
        assert off["test_accuracy"] == plain["test_accuracy"]


def test_architecture_control_runs_pgsl_nets_without_its_defence(tmp_path):
    """--defense arch: PGSL's unshuffled input (zero map) and three streams, no JSMA, no rpca."""
    m = train(tiny(tmp_path, defense="arch"))
    assert set(m["stream_accuracy"]) == {"attacked", "fusion", "recovered"} and "rpca" not in m
    assert not os.path.exists(tmp_path / "run" / "client1_attack.pt")
    run = restore(str(tmp_path / "run"))
    x = run.dataset.test.x[:4]
    assert run.client.net[0][0].in_channels == 5
    torch.testing.assert_close(run.client.net_input(x), pgsl_ext.ops.pixel_unshuffle_concat(x, torch.zeros_like(x), 2))
    logits = run.server.logits(run.messages(x))
    assert set(logits) == {"attacked", "fusion", "recovered"} and run.server.rpca_matrices == 0


def test_pgsl_plus_noise_is_pgsl_with_noisy_messages(tmp_path):
    """--defense pgsl+noise (the sweep's combination): PGSL's pipeline (JSMA cache, rpca, three
    streams) with the noise defence's Laplacian noise on what the client sends; at noise scale 0
    it is PGSL bit for bit."""
    pgsl = train(tiny(tmp_path, "pgsl"))
    off = train(tiny(tmp_path, "off", defense="pgsl+noise", noise_scale=0.0))
    on = train(tiny(tmp_path, "on", defense="pgsl+noise", noise_scale=1.0))
    assert off["history"][0]["train_loss_trace"] == pgsl["history"][0]["train_loss_trace"]
    assert off["test_correct"] == pgsl["test_correct"] and len(pgsl["test_correct"]) == 64
    assert on["history"][0]["train_loss_trace"] != pgsl["history"][0]["train_loss_trace"]
    assert "rpca" in on and set(on["stream_accuracy"]) == {"attacked", "fusion", "recovered"}
    run = restore(str(tmp_path / "on"))
    x = run.dataset.test.x[:4]
    assert run.client.net[0][0].in_channels == 5 and not torch.equal(run.encoded_images(x), x)
    assert not torch.equal(run.messages(x), run.messages(x)), "each message draws fresh noise"
    with pytest.raises(ConfigError, match="--noise-scale: acts on --defense noise or pgsl\\+noise only"):
        tiny(tmp_path, "bad", defense="pgsl", noise_scale=2.0).check()


def test_restore_epoch_0_rebuilds_the_weights_training_started_from(tmp_path, monkeypatch):
    """What gradient leakage attacks at the first step: the weights the first step saw."""
    from pgsl.client import Client

    seen = {}
    client_turn, server_handle = Client._train_shard, Server.handle

    def first_client_turn(self, epoch, progress):
        seen.setdefault(("client", self.index), {k: v.clone() for k, v in self.net.state_dict().items()})
        return client_turn(self, epoch, progress)

    def first_server_request(self, src, kind, tensors):
        if kind == "train":
            seen.setdefault("server", {k: v.clone() for k, v in self.net.state_dict().items()})
        return server_handle(self, src, kind, tensors)

    monkeypatch.setattr(Client, "_train_shard", first_client_turn)
    monkeypatch.setattr(Server, "handle", first_server_request)
    cfg = tiny(tmp_path, defense="pgsl")
    train(cfg)
    initial, final = restore(cfg.out, epoch=0), restore(cfg.out)
    for got, want, last in ((initial.client.net, seen["client", 1], final.client.net), (initial.server.net, seen["server"], final.server.net)):
        state = got.state_dict()
        assert state.keys() == want.keys()
        for key in want:
            assert torch.equal(state[key], want[key]), key
        assert any(not torch.equal(state[k], v) for k, v in last.state_dict().items()), "training changed nothing"
    assert torch.equal(initial.server.fusion.weights, torch.tensor([0.5, 0.3, 0.2], dtype=initial.server.fusion.weights.dtype))
    # the client's pipeline is the run's: the same surrogate and attacked images
    assert torch.equal(initial.client.data["test"].attacked, final.client.data["test"].attacked)
    for epoch in (-1, 2, 1.0, True):
        with pytest.raises(RunError, match="epoch: expected an integer from 0 to 1"):
            restore(cfg.out, epoch=epoch)


# --------------------------------------------------------------------------- bad input


def test_resume_guards(tmp_path):
    train(tiny(tmp_path, defense="none"))
    with pytest.raises(RunError, match="not empty .*pass --resume to continue it"):
        train(tiny(tmp_path, defense="none"))
    with pytest.raises(RunError, match="--resume: --seed is 1, but the run in .* used 0"):
        train(tiny(tmp_path, defense="none", seed=1, resume=True))
    os.remove(tmp_path / "run" / "server_epoch1.pt")
    with pytest.raises(RunError, match="server_epoch1.pt is missing"):
        train(tiny(tmp_path, defense="none", epochs=2, resume=True))


@pytest.mark.parametrize(
    "field,value,option",
    [("epochs", 0, "--epochs"), ("batch_size", 1, "--batch-size"), ("mu", -1.0, "--mu"), ("defense", "dp", "--defense"),
     ("fusion_weights", (1.0, -1.0, 0.0), "--fusion-weights"), ("rpca_iters", 0, "--rpca-iters"), ("clients", 0, "--clients"),
     ("jsma_gamma", 0.0, "--jsma-gamma"), ("timeout", 0.0, "--timeout"), ("device", "tpu", "--device")],
)
def test_bad_config(tmp_path, field, value, option):
    with pytest.raises(PgslError, match=option):
        train(tiny(tmp_path, **{field: value}))


def test_too_many_clients(tmp_path):
    with pytest.raises(RunError, match=r"--clients 100: client \d+ gets 1 training images"):
        train(tiny(tmp_path, clients=100))
