"""ctest: the C++ sampler draws what pycgn.sampler draws, for random seeds, indices and shapes.

Classes, offsets and indices must be equal; latents equal or within one float32 ulp (libm's
and numpy's log1p/cos may differ in the last double bit, which can flip a float rounding).

usage: check_sampler.py PATH/TO/pycgn_sampler_dump      (exit 0 pass, 1 fail, 77 skipped)
"""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import numpy as np
    from pycgn.sampler import Sampler
except ImportError as e:  # not a pycgn development environment
    print(f"SKIP: cannot import pycgn.sampler with {sys.executable}: {e}")
    sys.exit(77)


def cases(rng):
    out = []
    seeds = [0, 1, 2**63 - 1, 2**63, 2**64 - 1] + [int(s) for s in rng.integers(0, 2**63, size=7, dtype=np.int64)]
    for i, seed in enumerate(seeds):
        n = int(rng.integers(1, 40))
        indices = rng.integers(0, 2**62 if i % 3 == 0 else 5000, size=n).tolist()
        if i % 4 == 1:
            indices = list(range(int(rng.integers(0, 100)), int(rng.integers(100, 160))))
        n = len(indices)
        n_classes = int(rng.choice([1, 2, 3, 10, 17]))
        case = dict(seed=seed, indices=indices, n_classes=n_classes, latent_dim=int(rng.choice([1, 3, 32, 33])),
                    max_offset=int(rng.choice([0, 1, 31, 32, 63])), counterfactuals=int(rng.choice([1, 2, 5])))
        for name in ("shape", "texture", "bg"):
            mode = rng.integers(0, 3)
            if mode == 0:
                case[name] = []
            elif mode == 1:
                case[name] = [int(rng.integers(0, n_classes))]
            else:  # per sample, some random
                case[name] = [int(v) if rng.random() < 0.6 else -1 for v in rng.integers(0, n_classes, size=n)]
        out.append(case)
    return out


def python_draw(c):
    s = Sampler(c["seed"], n_classes=c["n_classes"], latent_dim=c["latent_dim"], max_offset=c["max_offset"],
                counterfactuals=c["counterfactuals"])

    def classes(v):
        if not v:
            return None
        return [None if x == -1 else x for x in v]

    return s.draw(c["indices"], shape=classes(c["shape"]), texture=classes(c["texture"]), bg=classes(c["bg"])).numpy()


def main():
    exe = sys.argv[1]
    rng = np.random.default_rng(20210503)
    cs = cases(rng)
    with tempfile.TemporaryDirectory() as tmp:
        cases_path, out_path = Path(tmp) / "cases.json", Path(tmp) / "out.json"
        cases_path.write_text(json.dumps(cs))
        subprocess.run([exe, str(cases_path), str(out_path)], check=True)
        got = json.loads(out_path.read_text())
    assert len(got) == len(cs)
    bad, inexact, total = 0, 0, 0
    for c, g in zip(cs, got):
        want = python_draw(c)
        for key in ("index", "shape", "texture", "bg", "fg_offset", "bg_offset"):
            w = want[key]
            v = np.asarray(g[key], dtype=np.int64).reshape(w.shape)
            if not np.array_equal(v, w):
                print(f"FAIL seed {c['seed']}: {key} differs: C++ {v.ravel()[:8]} Python {w.ravel()[:8]}")
                bad += 1
        for key in ("u_shape", "u_texture", "u_bg"):
            w = want[key]
            v = np.asarray(g[key], dtype=np.float32).reshape(w.shape)
            ulps = np.abs(v.view(np.int32).astype(np.int64) - w.view(np.int32).astype(np.int64))
            total += w.size
            inexact += int((ulps > 0).sum())
            if ulps.max(initial=0) > 1:
                print(f"FAIL seed {c['seed']}: {key} differs by {ulps.max()} ulp")
                bad += 1
    print(f"{len(cs)} cases, {total} latents: {total - inexact} bit-exact, {inexact} within 1 ulp; "
          f"{bad} mismatching fields")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
