"""The grid plot and its captions (helpers.figures): PSNR and LPIPS (or SSIM offline) under each panel."""
import subprocess
import sys

import pytest
import torch

from helpers import figures, metrics


def random_pair(seed=0, size=16):
    generator = torch.Generator().manual_seed(seed)
    reference = torch.rand(1, 3, size, size, generator=generator) * 2 - 1
    x = (reference + 0.2 * torch.randn(reference.shape, generator=generator)).clamp(-1, 1)
    return x, reference


def test_caption_names_psnr_and_a_second_metric():
    x, reference = random_pair()
    text = figures.caption(x, reference)
    assert isinstance(text, str)
    assert text.startswith(f"PSNR {metrics.psnr(x, reference).item():.1f} dB")
    assert ("LPIPS" in text) if metrics.lpips_available() else ("SSIM" in text)


def test_plot_grid_returns_a_figure_and_saves_it(tmp_path):
    import matplotlib.pyplot as plt

    x = torch.rand(2, 3, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    fig = figures.plot_grid(x, row_titles=["a", "b"], col_titles=["1", "2", "3"],
                            references=[x[0, 0], None], path=tmp_path / "figures" / "grid.png")
    assert (tmp_path / "figures" / "grid.png").is_file()
    assert len(fig.axes) == 6
    assert "PSNR" in fig.axes[1].get_xlabel()
    plt.close(fig)


def test_plot_grid_rejects_wrong_number_of_row_titles():
    with pytest.raises(ValueError, match=r"row_titles must have 2 entries \(one per row\)"):
        figures.plot_grid(torch.zeros(2, 1, 3, 4, 4), row_titles=["only one"])


def test_plot_grid_rejects_wrong_number_of_col_titles_on_a_square_grid():
    with pytest.raises(ValueError, match=r"col_titles must have 2 entries \(one per column\)"):
        figures.plot_grid(torch.zeros(2, 2, 3, 4, 4), col_titles=["a", "b", "c"])


def test_images_does_not_import_metrics_nor_figures():
    """metrics uses images' range conversion; the plot uses both; images needs neither (no import cycle)."""
    code = ("import sys, helpers.images; loaded = [m for m in ('helpers.metrics', 'helpers.figures') if m in sys.modules]; "
            "assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_panel_equal_to_its_reference_gets_no_caption():
    import matplotlib.pyplot as plt

    x, _ = random_pair()
    fig = figures.plot_grid([[x, x.clone() * 0.5]], references=[x])
    assert fig.axes[0].get_xlabel() == "" and fig.axes[1].get_xlabel().startswith("PSNR")
    plt.close(fig)


@pytest.mark.parametrize("rows, match", [([[torch.zeros(2, 3, 4, 4)]], r"rows must have shape \(3, H, W\) or \(1, 3, H, W\)"),
                                         ([["image"]], "rows must be a torch.Tensor image")])
def test_plot_grid_rejects_panels_that_are_not_one_image(rows, match):
    with pytest.raises(ValueError, match=match):
        figures.plot_grid(rows)
