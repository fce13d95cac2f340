"""Which OpenGL backend MuJoCo renders with: EGL when there is no display, chosen before any context exists.

The backend is fixed per process the moment PyOpenGL is first imported, and a failed
attempt poisons that choice, so each candidate is tried in a short child process first and
only a working one is written to `MUJOCO_GL` (and `PYOPENGL_PLATFORM`). gymnasium on its
own would try GLFW first, which needs a display. A user's own `MUJOCO_GL` is respected
and checked the same way. Falling back from EGL to OSMesa is announced on stderr, never
silent; when nothing works the error names the Debian packages that fix it.
"""

from __future__ import annotations

import os
import subprocess
import sys

BACKENDS = ("glfw", "egl", "osmesa")
#: What each backend needs on a Debian/Ubuntu machine (EGL and OSMesa render on the CPU through Mesa).
PACKAGES = {
    "egl": "libegl1 libegl-mesa0 libgl1 libgl1-mesa-dri",
    "osmesa": "libosmesa6",
    "glfw": "a display (DISPLAY or WAYLAND_DISPLAY) and libglfw3",
}
#: A real render of a one-geom model: making a context alone "succeeds" for GLFW without a display.
_PROBE = (
    "import mujoco\n"
    "model = mujoco.MjModel.from_xml_string(\"<mujoco><worldbody><geom size='1'/></worldbody></mujoco>\")\n"
    "renderer = mujoco.Renderer(model, 16, 16)\n"
    "renderer.update_scene(mujoco.MjData(model))\n"
    "assert renderer.render().shape == (16, 16, 3)\n"
    "renderer.close()\n"
)
_chosen: str | None = None


class RenderError(RuntimeError):
    """Rendering cannot work on this machine or with this request; the message says how to fix it."""


def probe(backend: str) -> str | None:
    """None if MuJoCo can render with `backend` here, else the last line of its error."""
    env = {**os.environ, "MUJOCO_GL": backend}
    env.pop("PYOPENGL_PLATFORM", None)
    if backend != "glfw":
        env["PYOPENGL_PLATFORM"] = backend
    result = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=60)
    if result.returncode == 0:
        return None
    lines = [line.strip() for line in result.stderr.strip().splitlines() if line.strip()]
    return lines[-1] if lines else f"exit code {result.returncode}"


def has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def requested_backend() -> str:
    """The user's MUJOCO_GL ('' if unset), refused in one line if MuJoCo would reject it on import."""
    requested = os.environ.get("MUJOCO_GL", "").strip().lower()
    if requested and requested not in BACKENDS:
        raise RenderError(f"MUJOCO_GL={requested!r} is not a MuJoCo backend: use one of {', '.join(BACKENDS)}")
    return requested


def ensure_backend() -> str:
    """Pick (once per process) and install the backend MuJoCo will render with; returns its name."""
    global _chosen
    if _chosen is not None:
        return _chosen
    requested = requested_backend()
    if requested:
        error = probe(requested)
        if error is not None:
            raise RenderError(
                f"MUJOCO_GL={requested} cannot render here ({error}); it needs {PACKAGES[requested]}, "
                "or unset MUJOCO_GL to let awac-robot choose"
            )
        return _install(requested)
    candidates = ("glfw", "egl", "osmesa") if has_display() else ("egl", "osmesa")
    failures: list[str] = []
    for backend in candidates:
        error = probe(backend)
        if error is None:
            if failures:
                print(f"awac-robot: rendering with {backend} ({'; '.join(failures)})", file=sys.stderr)
            return _install(backend)
        failures.append(f"{backend} failed: {error}")
    needs = "; ".join(f"{name}: {PACKAGES[name]}" for name in candidates)
    raise RenderError(f"no OpenGL backend can render here ({'; '.join(failures)}); install one ({needs})")


def _install(backend: str) -> str:
    global _chosen
    os.environ["MUJOCO_GL"] = backend
    if backend != "glfw":
        os.environ["PYOPENGL_PLATFORM"] = backend
    _chosen = backend
    return backend
