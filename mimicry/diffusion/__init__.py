"""Diffusion: noise schedules with the exact eps/x0/v conversions, and samplers (DDPM, DDIM,
DPM-Solver++ 2M) written as plain functions of a denoiser and a schedule, so that training,
`mimicry sample` and `mimicry eval` all draw through the same code."""
