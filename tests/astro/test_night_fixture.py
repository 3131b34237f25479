"""The shared reduced night is what the astrometry and photometry tests expect."""

from awe.model import ReducedScienceFrame, ReferenceCatalog


def test_reduced_night_is_complete(astro_night):
    for chip in astro_night.chips:
        frames = list(ReducedScienceFrame.chip.name == chip)
        assert len(frames) == len(astro_night.standards) + len(astro_night.science)
    kinds = sorted(c.kind for c in ReferenceCatalog.all())
    assert kinds == ["astrometric", "standard"]
