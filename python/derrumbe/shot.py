"""The shot: a scene and settings in, finished frames out (see include/derrumbe/pipeline/shot.hpp).

Keyword arguments mirror the C++ ``ShotParams`` fields; ``guide`` and ``output`` take dicts of
their fields. Every stage is cached under ``cache_dir`` (default ``<output dir>/.derrumbe-cache``),
so a new camera, seed or prompt re-runs only what depends on it, and an interrupted shot resumes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch

from . import _derrumbe

Camera = Union[str, int, Sequence[Dict[str, Any]], Dict[str, Any], None]
Callback = Callable[[Dict[str, Any]], bool]


@dataclass
class StageRecord:
    name: str
    key: str
    reused: bool
    seconds: float


@dataclass
class ShotResult:
    """frames: [F, 3, H, W] float32 display-referred sRGB in [0, 1]; files: what was written."""

    frames: torch.Tensor
    files: List[str]
    output_dir: str
    sidecar: str
    stages: List[StageRecord] = field(default_factory=list)

    def stage(self, name: str) -> StageRecord:
        for s in self.stages:
            if s.name == name:
                return s
        raise KeyError(name)


def _camera(camera: Camera) -> Dict[str, Any]:
    """A scene camera by name (str) or index (int), explicit keys (a list of key dicts), or the
    ShotParams form ({"name", "index", "keys"})."""
    if camera is None:
        return {}
    if isinstance(camera, dict):
        return dict(camera)
    if isinstance(camera, bool):
        raise ValueError("camera: expected a name, an index or a list of keys, got a bool")
    if isinstance(camera, int):
        return {"index": camera}
    if isinstance(camera, str):
        return {"name": camera}
    return {"keys": [dict(k) for k in camera]}


def _result(native: Dict[str, Any]) -> ShotResult:
    stages = [StageRecord(**s) for s in native["stages"]]
    return ShotResult(native["frames"], list(native["files"]), native["output_dir"], native["sidecar"], stages)


class _Progress:
    """tqdm bars per stage (a step bar while sampling) forwarding to the user's callback."""

    def __init__(self, show: bool, callback: Optional[Callback]):
        self.show, self.callback, self.bar, self.stage = show, callback, None, None

    def __call__(self, info: Dict[str, Any]) -> bool:
        if self.show:
            from tqdm.auto import tqdm

            if info["stage"] != self.stage:
                self.close()
                self.stage = info["stage"]
                self.bar = tqdm(total=info["num_steps"] or None, desc=f"{info['stage_index'] + 1}/"
                                f"{info['num_stages']} {info['stage']}", leave=False)
            if self.bar is not None and info["num_steps"]:
                self.bar.total = info["num_steps"]
                self.bar.n = info["step"]
                self.bar.refresh()
        return bool(self.callback(info)) if self.callback is not None else False

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class Shot:
    """A shot from a scene file (.json), an imported track (.glb, .drbtrack) or a
    :class:`derrumbe.Scene`.

    Example::

        shot = derrumbe.Shot("examples/scenes/small.json", frames=17, steps=8, output={"dir": "out"})
        result = shot.render()          # result.frames: [F, 3, H, W]; out/shot.mp4, out/shot.1001.exr ...
    """

    def __init__(self, source: Union[str, Any, None] = None, *, camera: Camera = None, progress: bool = True,
                 **settings: Any):
        params: Dict[str, Any] = dict(settings)
        if source is not None and not isinstance(source, str):
            params["scene"] = json.loads(source.to_json())  # a derrumbe.Scene
        elif source is not None:
            params["source"] = source
        if camera is not None:
            params["camera"] = _camera(camera)
        self._native = _derrumbe._Shot(json.dumps(params))
        self.progress = progress

    @classmethod
    def from_sidecar(cls, path: str, *, progress: bool = True) -> "Shot":
        """The shot a sidecar written by :meth:`render` describes (the model files must match)."""
        shot = cls.__new__(cls)
        shot._native = _derrumbe._Shot.from_sidecar(path)
        shot.progress = progress
        return shot

    @property
    def params(self) -> Dict[str, Any]:
        """Every setting, as the sidecar stores them."""
        return json.loads(self._native.params_json())

    def _run(self, method: Callable[..., Any], callback: Optional[Callback], *args: Any) -> Any:
        progress = _Progress(self.progress, callback)
        try:
            return method(*args, progress if (self.progress or callback) else None)
        finally:
            progress.close()

    def render(self, callback: Optional[Callback] = None) -> ShotResult:
        """Runs (or resumes) every stage and writes the outputs. ``callback(info)`` gets a dict
        (stage, stage_index, num_stages, step, num_steps, elapsed, remaining) and returns True to
        cancel (raising :class:`derrumbe.Cancelled`)."""
        return _result(self._run(self._native.render, callback))

    def preview(self, callback: Optional[Callback] = None) -> ShotResult:
        """Half the resolution and half the steps, written under ``<output dir>/preview``."""
        return _result(self._run(self._native.preview, callback))

    def variations(self, seeds: Sequence[int] = (), intensities: Sequence[float] = (),
                   cameras: Sequence[Camera] = (), callback: Optional[Callback] = None) -> List[ShotResult]:
        """One shot per combination, each in ``<output dir>/v<i>_seed<s>...``, sharing the model and
        the cache."""
        cameras_json = [json.dumps({"camera": _camera(c)}) for c in cameras]
        results = self._run(self._native.variations, callback, list(seeds), list(intensities), cameras_json)
        return [_result(r) for r in results]
