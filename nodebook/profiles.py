"""Named run profiles: the one place that decides how big every chapter runs.

Each chapter's ``parameters`` cell names a profile (``profile = "book"``) and
the chapter reads its settings with :func:`get_profile`. The notebook body
has no scale switches of its own.

- ``smoke``: CI; each chapter in about a minute on 2 CPU cores. Asserts that
  the machinery works, not that the paper's numbers are reached.
- ``book``: the default; meaningful results on a laptop CPU. The committed
  checkpoints were trained at this profile.
- ``paper``: the paper's scale, meant for a GPU.
"""

from __future__ import annotations

from types import MappingProxyType

PROFILES = MappingProxyType({
    "smoke": "CI: each chapter in about a minute on 2 CPU cores",
    "book": "default: meaningful results on a laptop CPU",
    "paper": "the paper's scale, meant for a GPU",
})

# chapter -> profile -> settings. Every chapter defines all three profiles.
SETTINGS: dict[str, dict[str, dict]] = {
    "solvers": {
        "smoke": dict(num_steps_sweep=[8, 16, 32, 64], tolerances=[1e-3, 1e-5, 1e-7]),
        "book": dict(num_steps_sweep=[8, 16, 32, 64, 128, 256, 512],
                     tolerances=[1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9]),
        "paper": dict(num_steps_sweep=[8, 16, 32, 64, 128, 256, 512, 1024, 2048],
                      tolerances=[1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10, 1e-11]),
    },
    "adjoint": {
        "smoke": dict(num_hiddens=16, tolerances=[1e-6, 1e-10], memory_steps=[10, 100, 1000],
                      nfe_tolerances=[1e-3, 1e-5], nfe_iterations=20),
        "book": dict(num_hiddens=16, tolerances=[1e-4, 1e-6, 1e-8, 1e-10],
                     memory_steps=[10, 30, 100, 300, 1000, 3000],
                     nfe_tolerances=[1e-3, 1e-4, 1e-5, 1e-6, 1e-7], nfe_iterations=200),
        "paper": dict(num_hiddens=64, tolerances=[1e-4, 1e-6, 1e-8, 1e-10, 1e-12],
                      memory_steps=[10, 30, 100, 300, 1000, 3000, 10000],
                      nfe_tolerances=[1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8], nfe_iterations=2000),
    },
}


class Profile(dict):
    """A chapter's settings at one profile: a dict whose keys also read as attributes."""

    def __init__(self, chapter: str, name: str, settings: dict):
        super().__init__(settings)
        self.chapter = chapter
        self.name = name

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(
                f"profile {self.name!r} of chapter {self.chapter!r} has no setting {key!r}; "
                f"it has {sorted(self)}") from None


def get_profile(chapter: str, profile: str) -> Profile:
    """Settings of ``chapter`` at ``profile``; unknown names raise a ``ValueError`` listing valid ones."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; valid profiles are {list(PROFILES)}")
    if chapter not in SETTINGS:
        raise ValueError(f"unknown chapter {chapter!r}; chapters with profiles are {sorted(SETTINGS)}")
    return Profile(chapter, profile, SETTINGS[chapter][profile])
