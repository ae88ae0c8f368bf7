"""How fast `fastdet` answers: `fastdet --help`, `fastdet train --help`, `fastdet --version`, against importing what the
commands run (`fastdet.commands`: torch, fastai, timm, effdet), which is what every `--help` cost before the parser
stopped importing it. Median of --n runs each, in fresh processes.

Usage: python benchmarks/cli.py [--n 5]"""
import argparse, statistics, subprocess, sys, time
from pathlib import Path

EXE = Path(sys.executable).parent/'fastdet'

def timed(cmd:list, n:int)->float:
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, default=5)
    n = ap.parse_args().n
    heavy = timed([sys.executable, '-c', 'import fastdet.commands'], n)
    print(f"{'command':<28} {'median s':>9} {'vs importing the commands':>26}")
    for args in (['--help'], ['train', '--help'], ['predict', '--help'], ['--version']):
        t = timed([str(EXE), *args], n)
        print(f"{'fastdet ' + ' '.join(args):<28} {t:>9.3f} {heavy / t:>25.1f}x")
    print(f"{'import fastdet.commands':<28} {heavy:>9.3f}")
