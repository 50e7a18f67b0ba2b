"""Reading perf's and py-spy's samples: `.venv/bin/python -m pytest bench/test_cpu_profile.py`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cpu_profile

PERF_SCRIPT = """\
 101
\t    7f34fbccf300 _PyEval_EvalFrameDefault+0x1a2 (/usr/lib/libpython3.11.so.1.0)
\t    7f34ff256240 [unknown] ([unknown])

 101
\tffffffff81bd0001 tcp_sendmsg_locked+0x11 ([kernel.kallsyms])
\tffffffff81b00002 ksys_write+0x60 ([kernel.kallsyms])
\tffffffff821ef691 do_syscall_64+0x51 ([kernel.kallsyms])
\tffffffff81000130 entry_SYSCALL_64_after_hwframe+0x76 ([kernel.kallsyms])
\t           1a2b3 __GI___libc_write+0x13 (/usr/lib/x86_64-linux-gnu/libc.so.6)

 102
\tffffffff81400001 ext4_sync_file+0x20 ([kernel.kallsyms])
\tffffffff81400002 __x64_sys_fdatasync+0x10 ([kernel.kallsyms])
\tffffffff821ef691 do_syscall_64+0x51 ([kernel.kallsyms])

 102
\tffffffff81000001 finish_task_switch.isra.0+0x9 ([kernel.kallsyms])
\tffffffff821ef691 do_syscall_64+0x51 ([kernel.kallsyms])
\t           85f16 pthread_cond_signal@@GLIBC_2.3.2+0x5 (/usr/lib/x86_64-linux-gnu/libc.so.6)

 102
\tffffffff81000002 asm_sysvec_apic_timer_interrupt+0x1 ([kernel.kallsyms])
\t           37c82 [unknown] (/usr/lib/x86_64-linux-gnu/libsqlite3.so.0.8.6)
"""


def test_perf_samples_are_put_down_to_a_library_or_a_system_call():
    samples = cpu_profile.parse_perf_script(PERF_SCRIPT)
    assert [s.tid for s in samples] == [101, 101, 102, 102, 102]
    assert [cpu_profile.where(s) for s in samples] == [
        "libpython3.11.so.1.0",
        "kernel: write",  # ksys_write: the call's own frame was inlined
        "kernel: fdatasync",
        "kernel: futex",  # named by its C library wrapper
        "kernel: outside system calls (interrupts, the scheduler)",
    ]
    table = cpu_profile.perf_table(samples, {101: "python (event loop)", 102: "sqlite-commit"})
    assert table[("sqlite-commit", "kernel: fdatasync")] == 1
    assert sum(table.values()) == 5


PY_SPY_RAW = """\
main (cli.py:10);handle (app/api.py:5);encode (app/json.py:7) 6
main (cli.py:10);handle (app/api.py:6);encode (app/json.py:9) 3
main (cli.py:10);handle (app/api.py:8) 1
not a sample line
"""


def test_py_spy_samples_add_up_per_function_whatever_the_line():
    own, inclusive, total = cpu_profile.parse_py_spy_raw(PY_SPY_RAW)
    assert total == 10
    assert own == {"encode (app/json.py)": 9, "handle (app/api.py)": 1}
    assert inclusive["handle (app/api.py)"] == 10
    assert inclusive["main (cli.py)"] == 10
    assert inclusive["encode (app/json.py)"] == 9


def test_a_recursive_function_counts_once_per_sample_with_its_callees():
    own, inclusive, total = cpu_profile.parse_py_spy_raw("f (a.py:1);f (a.py:2);g (a.py:3) 4\n")
    assert inclusive["f (a.py)"] == 4 and own["g (a.py)"] == 4 and total == 4


def test_py_spy_paths_are_cut_to_the_package():
    assert (
        cpu_profile._function("send (/x/.venv/lib/python3.11/site-packages/uvicorn/h11.py:12)")
        == "send (uvicorn/h11.py)"
    )
    assert cpu_profile._function("run (/work/main/src/airia_server/app.py:3)") == (
        "run (airia_server/app.py)"
    )
