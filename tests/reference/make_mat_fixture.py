#!/usr/bin/env python3
"""Regenerate the MATLAB v5 MAT-file fixtures checked by run_pipeline::datasets::matv5's tests.

An independent writer (scipy.io.savemat, format '5') produces:

* tests/fixtures/mat/sidd_like_blocks.mat: compressed (miCOMPRESSED), one uint8 variable
  `sidd_like_blocks` of shape (images=2, blocks=3, H=8, W=8, C=3), laid out like SIDD's
  ValidationNoisyBlocksSrgb.mat, with value (i*7 + b*13 + y*3 + x*5 + c*11) % 256.
* tests/fixtures/mat/mixed_uncompressed.mat: uncompressed, holding
  `doubles` float64 (3, 4) = r*10 + k + 0.25 (r row, k column),
  `shorts`  int16 (2, 5)   = (r - 1) * 1000 + k * 7 - 3  (negative values included),
  `label`   a char array, which the Rust reader must skip.

    pip install scipy
    python3 tests/reference/make_mat_fixture.py
"""
from pathlib import Path

import numpy as np
import scipy.io

OUT = Path(__file__).resolve().parent.parent / "fixtures" / "mat"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)

    i, b, y, x, c = np.meshgrid(
        np.arange(2), np.arange(3), np.arange(8), np.arange(8), np.arange(3), indexing="ij"
    )
    blocks = ((i * 7 + b * 13 + y * 3 + x * 5 + c * 11) % 256).astype(np.uint8)
    assert blocks.shape == (2, 3, 8, 8, 3)
    scipy.io.savemat(
        OUT / "sidd_like_blocks.mat",
        {"sidd_like_blocks": blocks},
        format="5",
        do_compression=True,
        oned_as="row",
    )

    r, k = np.meshgrid(np.arange(3), np.arange(4), indexing="ij")
    doubles = (r * 10 + k + 0.25).astype(np.float64)
    r2, k2 = np.meshgrid(np.arange(2), np.arange(5), indexing="ij")
    shorts = ((r2 - 1) * 1000 + k2 * 7 - 3).astype(np.int16)
    scipy.io.savemat(
        OUT / "mixed_uncompressed.mat",
        {"doubles": doubles, "shorts": shorts, "label": "not numeric"},
        format="5",
        do_compression=False,
        oned_as="row",
    )

    # Read back with scipy as a sanity check of the fixture itself.
    back = scipy.io.loadmat(OUT / "sidd_like_blocks.mat")["sidd_like_blocks"]
    assert back.dtype == np.uint8 and back.shape == blocks.shape and (back == blocks).all()
    mixed = scipy.io.loadmat(OUT / "mixed_uncompressed.mat")
    assert (mixed["doubles"] == doubles).all() and (mixed["shorts"] == shorts).all()
    for name in ("sidd_like_blocks.mat", "mixed_uncompressed.mat"):
        print(f"wrote {OUT / name} ({(OUT / name).stat().st_size} bytes)")


if __name__ == "__main__":
    main()
