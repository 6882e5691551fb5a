#!/usr/bin/env python3
"""cfg_diff.py PERL_DUMPER C_DUMPER CONFIG_DIR: the differential test of policy/config.c.

Every CONFIG_DIR/*.conf is loaded by Config::General (cfg_dump.pl, mtpolicyd 2.05's options)
and by ringpolicyd (cfg_dump, built from config.c); both dumps must be equal. A file whose
first line is "# expect: both-refuse" must be refused by both (messages differ by design);
"# expect: ours-refuses REASON" marks an intentional difference: Perl accepts, we refuse.
Both run with CONFIG_DIR/cwd as the current directory and absolute paths, so that includes
exercise "current directory first, then the main file's directory".
Exit 77 (skip) when perl or Config::General is missing.
"""
import glob
import os
import shutil
import subprocess
import sys


def run(cmd, cwd):
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, timeout=60)
    return p.returncode, p.stdout.decode('latin-1'), p.stderr.decode('latin-1')


def main():
    perl_dumper, c_dumper, config_dir = (os.path.abspath(a) for a in sys.argv[1:4])
    if shutil.which('perl') is None:
        print('SKIP: perl is not installed')
        return 77
    cwd = os.path.join(config_dir, 'cwd')
    files = sorted(glob.glob(os.path.join(config_dir, '*.conf')))
    failures = 0
    for path in files:
        with open(path, 'rb') as f:
            first = f.readline().decode('latin-1').strip()
        expect = 'same'
        if first.startswith('# expect: both-refuse'):
            expect = 'both-refuse'
        elif first.startswith('# expect: ours-refuses'):
            expect = 'ours-refuses'
        prc, pout, perr = run(['perl', perl_dumper, path], cwd)
        if prc == 77:
            print('SKIP: ' + perr.strip())
            return 77
        crc, cout, cerr = run([c_dumper, path], cwd)
        name = os.path.basename(path)
        perl_refused, ours_refused = prc != 0, crc != 0
        if crc not in (0, 1):
            ok = False
        elif expect == 'both-refuse':
            ok = perl_refused and ours_refused
        elif expect == 'ours-refuses':
            ok = ours_refused and not perl_refused
        else:
            ok = not perl_refused and not ours_refused and pout == cout
        print('%s %s (%s): perl %s, ours %s' % ('ok  ' if ok else 'FAIL', name, expect,
              'refused' if perl_refused else 'accepted', 'refused' if ours_refused else 'accepted'))
        if perl_refused:
            print('      perl: ' + perr.strip().splitlines()[0] if perr.strip() else '')
        if ours_refused:
            print('      ours: ' + cerr.strip())
        if not ok:
            failures += 1
            if expect == 'same' and not perl_refused and not ours_refused:
                print('--- perl\n' + pout + '--- ours\n' + cout)
    print('%d files, %d failed' % (len(files), failures))
    return 1 if failures or not files else 0


if __name__ == '__main__':
    sys.exit(main())
