"""Helpers for the course "Diffusion models for image generation and inverse problems".

Modules (import them, e.g. ``from helpers import operators``):

- ``schedule``: the linear beta schedule and the timestep convention (paper eqs. 2-3)
- ``models``: ``load_model`` and the paper's quantities ``eps``, ``score``, ``x0_hat`` (eqs. 4-6)
- ``sampling``: the reference DDPM sampler (eqs. 6-7) and SDEdit
- ``posterior``: the posterior samplers ScoreALD and DPS (Sec. III-C)
- ``operators``: forward models A and their adjoints (eq. 8)
- ``images``: test images, loading, range conversion, saving
- ``metrics``: PSNR, SSIM, LPIPS
- ``figures``: ``plot_grid``, the grid plot with metrics in its captions
- ``checks``: ``check_close``
- ``exercises``: the checks that follow the notebooks' exercises (one per exercise)
- ``seeding``: ``seed_everything``
- ``train``: training the embedded model (``python -m helpers.train``)
"""
