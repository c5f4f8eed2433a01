"""Drawing poses: the Human3.6M-17 skeleton over a frame (OpenCV) and in 3D (matplotlib), side by side.

Colours (RGB) by side, the same in 2D and 3D: the person's left limbs blue, right limbs red, the trunk and
head green. Used by ``poselift demo``; the report's contact sheet (:func:`poselift.report.contact_sheet`)
draws visibility-coloured bones of labelled crops instead.

3D poses are root-relative camera-frame coordinates in mm (x right, y down, z forward, as every lifting
model predicts). The 3D panel shows them y-up: plot axes (x, z, -y), i.e. horizontal = the camera's x,
depth = its z, vertical = up; fixed limits of +-``extent`` mm around the pelvis so that the figure does not
jump from frame to frame, seen from slightly above and to the side of the camera.
"""

from __future__ import annotations

import numpy as np

from poselift.skeleton import H36M17

LEFT, RIGHT, CENTRE = (60, 120, 255), (235, 60, 50), (40, 200, 80)


def bone_colours(skeleton=H36M17) -> list[tuple[int, int, int]]:
    """The RGB colour of each bone of ``skeleton.bones`` (by its child joint's side)."""
    left, right = set(skeleton.left), set(skeleton.right)
    return [LEFT if j in left else RIGHT if j in right else CENTRE for _, j in skeleton.bones]


def draw_skeleton_2d(image: np.ndarray, keypoints: np.ndarray, scores: np.ndarray | None = None,
                     threshold: float = 0.3, thickness: int | None = None) -> np.ndarray:
    """A copy of ``image`` (RGB uint8) with the H36M-17 skeleton ``keypoints`` (17, 2) px drawn on it; joints
    whose score is below ``threshold`` and their bones are drawn thin and grey."""
    import cv2

    out = np.ascontiguousarray(image).copy()
    kp = np.asarray(keypoints, np.float64)
    if not np.isfinite(kp).all():
        return out
    sc = np.ones(len(kp)) if scores is None else np.asarray(scores, np.float64)
    size = max(1, int(round(np.ptp(kp[:, 1]) / 90))) if thickness is None else thickness
    pts = [(int(round(x)), int(round(y))) for x, y in kp]
    for (p, j), colour in zip(H36M17.bones, bone_colours()):
        sure = sc[p] >= threshold and sc[j] >= threshold
        cv2.line(out, pts[p], pts[j], colour if sure else (150, 150, 150), size + 1 if sure else 1, cv2.LINE_AA)
    for j, pt in enumerate(pts):
        cv2.circle(out, pt, size + 1, (255, 255, 255) if sc[j] >= threshold else (150, 150, 150), -1, cv2.LINE_AA)
    return out


def draw_box(image: np.ndarray, box, colour=(255, 220, 0)) -> np.ndarray:
    """``image`` with the box [x, y, w, h] drawn on it (in place; returned)."""
    import cv2

    x, y, w, h = (int(round(v)) for v in box)
    cv2.rectangle(image, (x, y), (x + w, y + h), colour, 1, cv2.LINE_AA)
    return image


def put_text(image: np.ndarray, text: str, row: int = 0) -> np.ndarray:
    """``image`` with one line of text at the top left (in place; returned)."""
    import cv2

    y = 18 + 18 * row
    cv2.putText(image, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return image


class Skeleton3DPanel:
    """A matplotlib 3D view of one pose at a time, reused frame after frame: ``render(pose_mm) -> RGB uint8
    (size, size, 3)``; ``pose_mm`` None draws the empty axes (no person in that frame)."""

    def __init__(self, size: int = 480, extent: float = 1000.0, elevation: float = 12.0, azimuth: float = -70.0,
                 title: str = "3D (root-relative, mm)"):
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # no pyplot: no global backend, no GUI
        from matplotlib.figure import Figure

        dpi = 100
        self.size = int(size)
        self.figure = Figure(figsize=(self.size / dpi, self.size / dpi), dpi=dpi)
        self.canvas = FigureCanvasAgg(self.figure)
        ax = self.figure.add_subplot(projection="3d")
        self.figure.subplots_adjust(left=0, right=1, bottom=0, top=0.94)
        ax.set_xlim(-extent, extent)
        ax.set_ylim(-extent, extent)
        ax.set_zlim(-extent, extent)
        ax.set_box_aspect((1, 1, 1))
        ax.set_xlabel("x (right)", fontsize=7, labelpad=-8)
        ax.set_ylabel("z (depth)", fontsize=7, labelpad=-8)
        ax.set_zlabel("up", fontsize=7, labelpad=-8)
        ax.tick_params(labelsize=6, pad=-3)
        ax.view_init(elev=elevation, azim=azimuth)
        ax.set_title(title, fontsize=9)
        # the ground: a grid at the height of the lowest foot of a standing adult below the pelvis (~ -0.9 m)
        g = np.linspace(-extent, extent, 5)
        for v in g:
            ax.plot([v, v], [-extent, extent], [-900, -900], color="0.85", lw=0.6)
            ax.plot([-extent, extent], [v, v], [-900, -900], color="0.85", lw=0.6)
        colours = [tuple(c / 255 for c in rgb) for rgb in bone_colours()]
        self.lines = [ax.plot([], [], [], color=c, lw=2.5)[0] for c in colours]
        self.ax = ax

    @staticmethod
    def plot_coordinates(pose_mm: np.ndarray) -> np.ndarray:
        """Camera-frame (x right, y down, z forward) -> plot axes (x, z, -y): y up, z as depth."""
        p = np.asarray(pose_mm, np.float64)
        return np.stack([p[..., 0], p[..., 2], -p[..., 1]], axis=-1)

    def render(self, pose_mm: np.ndarray | None) -> np.ndarray:
        if pose_mm is not None and np.isfinite(pose_mm).all():
            p = self.plot_coordinates(pose_mm)
            for line, (a, b) in zip(self.lines, H36M17.bones):
                line.set_data_3d([p[a, 0], p[b, 0]], [p[a, 1], p[b, 1]], [p[a, 2], p[b, 2]])
                line.set_visible(True)
        else:
            for line in self.lines:
                line.set_visible(False)
        self.canvas.draw()
        return np.asarray(self.canvas.buffer_rgba())[..., :3].copy()


def side_by_side(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Two RGB images next to each other, the lower one scaled up to the other's height; the size made even
    (video encoders need even sizes)."""
    import cv2

    h = max(left.shape[0], right.shape[0])

    def fit(image):
        if image.shape[0] == h:
            return image
        return cv2.resize(image, (int(round(image.shape[1] * h / image.shape[0])), h), interpolation=cv2.INTER_LINEAR)

    left, right = fit(left), fit(right)
    out = np.concatenate([left, right], axis=1)
    if out.shape[1] % 2 or out.shape[0] % 2:
        out = np.pad(out, ((0, out.shape[0] % 2), (0, out.shape[1] % 2), (0, 0)))
    return out
