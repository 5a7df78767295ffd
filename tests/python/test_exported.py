"""TorchScript and AOTInductor networks as denoisers, against the same network called from Python."""
import pytest
import torch

import derrumbe


class TinyVideoNet(torch.nn.Module):
    """A small network on [B, C, F, H, W] with a time embedding, like a video denoiser."""

    def __init__(self, channels=4):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv3d(channels, channels, 3, padding=1)
        self.time = torch.nn.Linear(1, channels)

    def forward(self, x, t):
        emb = self.time(t[:, None].to(x.dtype))[:, :, None, None, None]
        return torch.tanh(self.conv(x) + emb)


@pytest.fixture(scope="module")
def net():
    return TinyVideoNet().eval()


def test_torchscript_matches_python(net, tmp_path):
    path = tmp_path / "net.pt"
    torch.jit.script(net).save(str(path))
    scripted = derrumbe.load_torchscript(str(path), "flow")
    reference = derrumbe.Parameterized(lambda x, t: net(x, t), "flow")
    x = derrumbe.randn([1, 4, 3, 8, 8], seed=1) * 5
    with torch.no_grad():
        for sigma in [50.0, 2.0, 0.1]:
            assert torch.allclose(scripted(x, sigma), reference(x, sigma), atol=1e-6)
        sigmas = derrumbe.schedules.flow_shift(4, shift=3.0)
        a = derrumbe.sample(scripted, x * sigmas[0], sigmas, "euler", progress=False)
        b = derrumbe.sample(reference, x * sigmas[0], sigmas, "euler", progress=False)
    assert torch.allclose(a, b, atol=1e-5)


def test_aoti_package_matches_python(net, tmp_path):
    x = torch.randn(1, 4, 3, 8, 8)
    t = torch.full((1,), 0.5)
    exported = torch.export.export(net, (x, t))
    path = torch._inductor.aoti_compile_and_package(exported, package_path=str(tmp_path / "net.pt2"))
    compiled = derrumbe.load_aoti(path, "eps")
    reference = derrumbe.Parameterized(lambda x, s: net(x, s), "eps")
    with torch.no_grad():
        for sigma in [3.0, 0.5]:
            assert torch.allclose(compiled(x, sigma), reference(x, sigma), atol=1e-5)


def test_exported_models_bad_input(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        derrumbe.load_torchscript(str(tmp_path / "missing.pt"), "eps")
    text = tmp_path / "not_a_model.pt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a TorchScript file"):
        derrumbe.load_torchscript(str(text), "eps")
    with pytest.raises(ValueError, match="not an AOTInductor package"):
        derrumbe.load_aoti(str(text), "eps")
    with pytest.raises(ValueError, match="unknown prediction"):
        derrumbe.load_torchscript(str(text), "velocity")
    # A network whose output does not match its input is a model error naming the shapes.
    path = tmp_path / "shrink.pt"

    class Wrapper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.pool = torch.nn.AvgPool3d(2)

        def forward(self, x, t):
            return self.pool(x)

    torch.jit.script(Wrapper()).save(str(path))
    model = derrumbe.load_torchscript(str(path), "x0")
    with pytest.raises(RuntimeError, match=r"returned shape \[1, 4, 1, 4, 4\]"):
        model(torch.zeros(1, 4, 2, 8, 8), 1.0)
