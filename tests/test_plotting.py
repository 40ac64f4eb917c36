"""Image grids and density/score figures."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from genmodels.data import eight_gaussians  # noqa: E402
from genmodels.plotting import density_and_score, graphical_model, image_grid, show_images  # noqa: E402


def test_image_grid_tiles_images_in_rows():
    images = torch.zeros(64, 1, 28, 28)
    images[5] = 1.0  # the sixth image, first row, sixth column
    grid = image_grid(images, nrow=16, padding=2)
    assert grid.shape == (2 + 4 * 30, 2 + 16 * 30)  # each tile is 28 + 2 of padding
    top, left = 2, 2 + 5 * 30
    assert np.all(grid[top:top + 28, left:left + 28] == 1.0)
    assert grid[top:top + 28, 2:2 + 28].max() == 0.0
    assert image_grid(images[:, 0], nrow=16).shape == grid.shape  # (B, H, W) accepted too
    as_uint8 = (images * 255).to(torch.uint8)
    np.testing.assert_array_equal(image_grid(as_uint8, nrow=16, padding=2), grid)  # uint8 is x / 255


def test_image_grid_rejects_wrong_shapes_and_ranges():
    with pytest.raises(ValueError, match="grey images"):
        image_grid(torch.zeros(4, 3, 28, 28))
    with pytest.raises(ValueError, match=r"\(x \+ 1\) / 2"):
        image_grid(torch.full((4, 28, 28), -1.0))


def test_show_images_draws_the_grid():
    ax = show_images(torch.rand(10, 28, 28), nrow=5, title="samples")
    (picture,) = ax.get_images()
    assert picture.get_array().shape == (2 + 2 * 30, 2 + 5 * 30)
    assert ax.get_title() == "samples"
    plt.close(ax.figure)


def test_density_and_score_shades_density_and_draws_one_arrow_per_grid_point():
    mixture = eight_gaussians()
    ax = density_and_score(mixture.log_prob, mixture.score, limits=(-3, 3), resolution=50, arrows=10)
    (picture,) = ax.get_images()
    shaded = np.asarray(picture.get_array())
    assert shaded.shape == (50, 50)
    assert shaded.max() == pytest.approx(mixture.log_prob(mixture.means).exp().max().item(), rel=0.5)
    (quiver,) = ax.collections
    assert quiver.N == 100
    np.testing.assert_allclose(np.hypot(quiver.U, quiver.V), 1.0)  # directions only
    plt.close(ax.figure)
    ax = density_and_score(mixture.log_prob, resolution=20)
    assert not ax.collections  # no score given, no arrows
    plt.close(ax.figure)


def test_animation_html_plays_without_the_network():
    from matplotlib import animation

    from genmodels.plotting import animation_html

    fig, ax = plt.subplots(figsize=(1, 1))
    (line,) = ax.plot([0, 1], [0, 1])
    movie = animation.FuncAnimation(fig, lambda k: line.set_ydata([0, k]), frames=3)
    html = animation_html(movie)
    plt.close(fig)
    assert "http" not in html and "font-awesome" not in html and 'class="fa' not in html
    assert html.count("data:image/png;base64") == 3  # every frame embedded
    assert "<span>▶</span>" in html and "<span>❚❚</span>" in html


def test_glue_hands_values_to_myst_nb_and_is_silent_without_it(monkeypatch):
    import sys
    import types

    from genmodels.plotting import glue

    calls = []
    fake = types.ModuleType("myst_nb")
    fake.glue = lambda name, value, display=True: calls.append((name, value, display))
    monkeypatch.setitem(sys.modules, "myst_nb", fake)
    glue("answer", "42")
    glue("shown", "7", display=True)
    assert calls == [("answer", "42", False), ("shown", "7", True)]
    monkeypatch.setitem(sys.modules, "myst_nb", None)  # not installed: import fails
    assert glue("answer", "42") is None and len(calls) == 2


def test_graphical_model_draws_circles_and_arrows_that_meet_the_circles():
    from matplotlib.patches import Circle, FancyArrowPatch

    nodes = {"z": (0.0, 1.5, "latent"), "x": (0.0, 0.0, "observed"), "t": (1.5, 0.0, "parameter"),
             "...": (-1.5, 0.0, "text")}
    edges = [("z", "x", {}), ("t", "x", {}), ("x", "z", dict(linestyle="--", bend=-0.5, label="q")),
             ("...", "x", {})]
    ax = graphical_model(nodes, edges, plates=[((-0.5, -0.5, 0.5, 2.0), "N")], radius=0.3)
    ax.figure.canvas.draw()
    circles = [p for p in ax.patches if isinstance(p, Circle)]
    assert sorted(round(c.get_radius(), 2) for c in circles) == [0.06, 0.3, 0.3]
    shade = {c.center: c.get_facecolor()[:3] for c in circles if c.get_radius() == 0.3}
    assert shade[(0.0, 0.0)] != shade[(0.0, 1.5)]  # the observed node is shaded, the latent one not
    arrows = [p for p in ax.patches if isinstance(p, FancyArrowPatch)]
    assert len(arrows) == len(edges)
    z_to_x = arrows[0].get_path().vertices  # in data coordinates, clipped at both circles' edges
    assert 0.3 <= np.hypot(*(z_to_x[0] - (0.0, 1.5))) < 0.42  # the rim, plus a gap of 2 points
    assert 0.3 <= np.hypot(*(z_to_x - (0.0, 0.0)).T).min() < 0.42
    bent = arrows[2].get_path().vertices
    assert bent[:, 0].min() < -0.2  # bend -0.5 from x up to z curves to the left of the chord
    assert [t.get_text() for t in ax.texts if t.get_text() in {"q", "N"}] == ["q", "N"]
    plt.close(ax.figure)
    with pytest.raises(ValueError, match="no node 'y'"):
        graphical_model(nodes, [("x", "y", {})])
    with pytest.raises(ValueError, match="kind must be one of"):
        graphical_model({"x": (0, 0, "hidden")}, [])
    plt.close("all")
