"""Hostile and broken candidates, each with the statuses the evaluator may answer.

Most hostile cases reach for the process through modules the policy stage does not know about
(``torch.serialization.os``, ``email.utils.socket``, ``numpy.ctypeslib.ctypes``...), because the
policy is a courtesy: these cases test the sandbox itself. A few plain ones test the policy.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path

from candidates import replace, with_prefix

from adversarial import integrity as ig
from adversarial import markers

# Places outside the sandbox's private /tmp that exist inside it: the root (bubblewrap's tmpfs),
# /usr, and the checkout's root (a directory bubblewrap made as a parent of the code it binds)
# unless the checkout itself lies under /tmp, where writing is the sandbox's design.
_CHECKOUT = Path(__file__).resolve().parents[2]
OUTSIDE_TMP = ["/", "/usr", *([str(_CHECKOUT)] if _CHECKOUT.parts[1] != "tmp" else [])]
# Imports only if no write outside /tmp succeeded (STATUS_IMPORT_ERROR).
WRITE_OUTSIDE_TMP = f"""import numpy as _np
_written = []
for _d in {OUTSIDE_TMP!r}:
    try:
        _np.save(_d.rstrip('/') + '/pwned.npy', _np.zeros(3))
        _written.append(_d)
    except OSError:
        pass
if not _written:
    raise OSError('read-only')
"""

CANARY_ENV = "AWS_SECRET_ACCESS_KEY"
CANARY_VALUE = markers.PROJECT.value  # in the evaluator's environment, and in the project root

OS = "_os = torch.serialization.os"
SYSTEM = "getattr(_os, 'sys' + 'tem')"
LEARN_LOOP = "for inputs, labels in train_data:"

# The system's own Python packages, outside every virtual environment (Debian's python3-sklearn
# puts scikit-learn and its digits files, the evaluation's test set, in the first): whatever
# interpreter runs the worker, /usr is in the sandbox's view. The suite puts a marker in the
# first where it can (as root); the unprivileged run still finds Debian's own entries.
SYSTEM_PACKAGE_DIRS = sorted(
    {"/usr/lib/python3/dist-packages"}
    | set(glob.glob("/usr/lib/python3.*/dist-packages"))
    | set(glob.glob("/usr/local/lib/python3.*/dist-packages"))
)
SYSTEM_MARKER_DIR = Path("/usr/lib/python3/dist-packages") / f"nasloop-adversarial-{os.getpid()}"
SYSTEM_MARKER_FILE = SYSTEM_MARKER_DIR / "digits.csv.gz"  # named like sklearn's, for the walkers
SYSTEM_MARKER_VALUE = "system-marker-5d2e91"
READ_SYSTEM_PACKAGES = f"""{OS}
for _d in {SYSTEM_PACKAGE_DIRS!r}:
    try:
        _seen = _os.listdir(_d)
    except OSError:
        _seen = []
    if _seen:
        print('SYSTEM-PACKAGES-SEEN', _d, len(_seen), sorted(_seen)[:5])
try:
    _fd = _os.open({str(SYSTEM_MARKER_FILE)!r}, _os.O_RDONLY)
    print('READ', _os.read(_fd, 100))
except OSError as e:
    print('denied', type(e).__name__)
"""


def in_learn(statements: str) -> str:
    """The good network with ``statements`` at the start of ``learn``."""
    body = "".join(f"{line}\n        " for line in statements.strip().splitlines())
    return replace(LEARN_LOOP, body + LEARN_LOOP)


FORGE = (
    f"{OS}\n"
    "import json as _json, struct as _struct\n"
    "def _forge(header, body=b''):\n"
    "    h = _json.dumps(header).encode()\n"
    "    r = b'NLR1' + _struct.pack('>I', len(h)) + h + body\n"
    "    for _fd in range(3, 64):\n"
    "        try:\n"
    "            _os.write(_fd, b'R' + _struct.pack('>I', len(r)) + r)\n"
    "        except OSError:\n"
    "            pass\n"
    "    _os._exit(0)\n"
)


@dataclass(frozen=True)
class Case:
    name: str
    code: str
    expected: frozenset[str]
    # Strings that must not appear in the candidate's output tail (leaked secrets).
    not_in_output: tuple[str, ...] = field(default=())
    # Accuracy it may reach at most (an attack that "ran" must not have gained anything).
    max_accuracy: float = 1.0
    # Words the result's message must contain.
    message: str = ""
    # The marker (adversarial.markers) the case looks for: without it the case cannot fail.
    needs: str = ""


def case(
    name: str,
    code: str,
    *expected: str,
    not_in_output: tuple[str, ...] = (),
    max_accuracy: float = 1.0,
    message: str = "",
    needs: str = "",
) -> Case:
    return Case(name, code, frozenset(expected), not_in_output, max_accuracy, message, needs)


def print_files(paths: str) -> str:
    """Prints the first bytes of each file in ``paths`` (a Python expression) it can read."""
    return with_prefix(
        f"{OS}\n"
        f"for _p in {paths}:\n"
        "    try:\n"
        "        print(_p, _os.read(_os.open(_p, _os.O_RDONLY), 100))\n"
        "    except OSError as e:\n"
        "        print('denied', _p, type(e).__name__)"
    )


FAIL_OR_LOW = ("STATUS_OK", "STATUS_LOW_ACCURACY")  # ran, and the attack achieved nothing

CASES = [
    # --- broken code ---
    case("syntax_error", "def broken(:\n    pass\n", "STATUS_SYNTAX_ERROR"),
    case("empty_answer", "", "STATUS_NO_CODE"),
    case("missing_net", "def supported_hyperparameters():\n    return set()\n",
         "STATUS_MISSING_ENTRY_POINT"),
    case("net_lacks_learn", replace("    def learn(self, train_data):", "    def _learn(self, d):"),
         "STATUS_MISSING_ENTRY_POINT"),
    case("exception_in_init", replace("super().__init__()", "super().__init__(); 1 / 0"),
         "STATUS_INIT_EXCEPTION"),
    case("import_error", with_prefix("import torchvision_that_does_not_exist"),
         "STATUS_IMPORT_ERROR"),
    case("wrong_output_shape", replace("nn.Linear(32, out_shape[0])", "nn.Linear(32, 7)"),
         "STATUS_WRONG_OUTPUT_SHAPE"),
    case("forward_returns_tuple",
         replace("return self.head(torch.flatten(self.features(x), 1))", "return (x, x)"),
         "STATUS_WRONG_OUTPUT_SHAPE"),
    case("infinite_recursion",
         replace("return self.head(torch.flatten(self.features(x), 1))", "return self.forward(x)"),
         "STATUS_FORWARD_EXCEPTION"),
    case("nan_loss", replace("loss = self.criteria[0](self(inputs), labels)",
                             "loss = self.criteria[0](self(inputs), labels) * float('nan')"),
         "STATUS_NON_FINITE_LOSS"),
    case("exception_in_learn", in_learn("raise ValueError('nope')"),
         "STATUS_TRAIN_EXCEPTION"),
    case("shape_changes_after_probe",
         replace("return self.head(torch.flatten(self.features(x), 1))",
                 "out = self.head(torch.flatten(self.features(x), 1))\n"
                 "        return out if self.training or x.shape[0] <= 4 else out[:, :3]"),
         "STATUS_EVAL_EXCEPTION"),
    case("billion_parameters",
         replace("self.head = nn.Linear(32, out_shape[0])",
                 "self.head = nn.Linear(32, out_shape[0])\n"
                 "        self.huge = nn.Linear(100_000, 10_000, device='meta')"),
         "STATUS_PARAMETER_LIMIT"),
    case("billion_parameters_allocated",
         replace("self.head = nn.Linear(32, out_shape[0])",
                 "self.head = nn.Linear(32, out_shape[0])\n"
                 "        self.huge = nn.Linear(100_000, 10_000)"),
         "STATUS_OUT_OF_MEMORY", "STATUS_PARAMETER_LIMIT"),
    case("memory_bomb", with_prefix("hog = [bytearray(1 << 28) for _ in range(64)]"),
         "STATUS_OUT_OF_MEMORY"),
    case("sys_exit", with_prefix("import torch.serialization\nraise SystemExit(3)"),
         "STATUS_IMPORT_ERROR"),
    case("os_exit", with_prefix(f"{OS}\n_os._exit(0)"), "STATUS_NO_RESULT"),
    case("kill_self", with_prefix(f"{OS}\n_os.kill(_os.getpid(), 9)"), "STATUS_NO_RESULT"),
    # --- time ---
    case("infinite_loop_at_import", with_prefix("while True:\n    pass"), "STATUS_WALL_TIMEOUT"),
    case("sleep_loop_in_learn", in_learn("import time\nwhile True:\n    time.sleep(1)"),
         "STATUS_WALL_TIMEOUT"),
    case("ignore_sigterm",
         with_prefix("import torch.utils.data._utils.signal_handling as _sh\n"
                     "_sh.signal.signal(_sh.signal.SIGTERM, _sh.signal.SIG_IGN)\n"
                     "_sh.signal.signal(_sh.signal.SIGINT, _sh.signal.SIG_IGN)\n"
                     "while True:\n    pass"),
         "STATUS_WALL_TIMEOUT"),
    # --- escapes: processes, exec, network, kernel ---
    case("os_system_plain", "import os\nos.system('id')\n", "STATUS_FORBIDDEN_CONSTRUCT"),
    case("subprocess_plain", "import subprocess\nsubprocess.run(['id'])\n",
         "STATUS_FORBIDDEN_CONSTRUCT"),
    case("eval_plain", "eval('1+1')\n", "STATUS_FORBIDDEN_CONSTRUCT"),
    case("os_system_obfuscated", with_prefix(f"{OS}\n{SYSTEM}('id > /tmp/pwned')"),
         "STATUS_SANDBOX_VIOLATION"),
    case("subprocess_obfuscated",
         with_prefix("import torch.utils.cpp_extension as _ce\n_ce.subprocess.run(['id'])"),
         "STATUS_SANDBOX_VIOLATION"),
    case("fork_bomb", with_prefix(f"{OS}\nwhile True:\n    getattr(_os, 'fo' + 'rk')()"),
         "STATUS_SANDBOX_VIOLATION"),
    case("socket_to_loopback",
         with_prefix("import email.utils as _eu\n"
                     "_s = _eu.socket.socket(_eu.socket.AF_INET, _eu.socket.SOCK_STREAM)\n"
                     "_s.connect(('127.0.0.1', 22))"),
         "STATUS_SANDBOX_VIOLATION"),
    case("ctypes_raw_fork",
         with_prefix("import numpy.ctypeslib as _nc\n"
                     "getattr(_nc.ctypes.CDLL(None), 'fo' + 'rk')()"),
         "STATUS_SANDBOX_VIOLATION"),
    case("ctypes_ptrace",
         with_prefix("import numpy.ctypeslib as _nc\n_nc.ctypes.CDLL(None).ptrace(16, 1, 0, 0)"),
         "STATUS_SANDBOX_VIOLATION"),
    case("dataloader_workers",
         in_learn("ds = torch.utils.data.TensorDataset(torch.zeros(8, 3), torch.zeros(8))\n"
                  "for _ in torch.utils.data.DataLoader(ds, num_workers=2):\n"
                  "    pass"),
         "STATUS_SANDBOX_VIOLATION", "STATUS_TRAIN_EXCEPTION"),
    case("kill_the_parent", with_prefix(f"{OS}\n_os.kill(_os.getppid(), 9)"),
         "STATUS_IMPORT_ERROR"),
    case("kill_everyone", with_prefix(f"{OS}\ngetattr(_os, 'ki' + 'll')(-1, 9)"),
         "STATUS_IMPORT_ERROR"),  # signals to others are refused (EPERM) by the filter
    # --- data: secrets, files, output ---
    case("dump_environment",
         with_prefix(f"{OS}\nprint(dict(_os.environ))"),
         *FAIL_OR_LOW, not_in_output=(CANARY_VALUE,)),
    case("read_service_account_token", print_files(f"[{str(markers.TOKEN.path)!r}]"),
         *FAIL_OR_LOW, not_in_output=(markers.TOKEN.value,), needs=markers.TOKEN.name),
    case("read_home_and_project_files",
         print_files(f"('/root/.bashrc', '/root/.ssh/id_rsa', {str(markers.PROJECT.path)!r}, "
                     "_os.path.expanduser('~/.netrc'))"),
         *FAIL_OR_LOW, not_in_output=(CANARY_VALUE,), needs=markers.PROJECT.name),
    case("look_for_test_labels",
         with_prefix(f"{OS}\n"
                     "_skip = ('usr', 'proc', 'sys', 'dev', 'lib', 'site-packages')\n"
                     "for _root, _dirs, _files in _os.walk('/'):\n"
                     "    _dirs[:] = [d for d in _dirs if d not in _skip]\n"
                     "    for _f in _files:\n"
                     "        if _f.endswith('.npy') or 'labels' in _root:\n"
                     "            print('FOUND', _root, _f)"),
         *FAIL_OR_LOW, not_in_output=("FOUND",)),
    case("write_outside_tmp",
         with_prefix(WRITE_OUTSIDE_TMP),
         "STATUS_IMPORT_ERROR"),
    case("fill_tmp",
         with_prefix("import numpy as _np\n"
                     "for _i in range(100):\n"
                     "    _np.zeros(50 << 20, dtype=_np.uint8).tofile(f'/tmp/fill{_i}')"),
         "STATUS_IMPORT_ERROR", "STATUS_NO_RESULT"),
    case("stdout_flood", with_prefix("for _i in range(200_000):\n    print('x' * 200)"),
         *FAIL_OR_LOW),
    case("leftover_thread",
         with_prefix("import torch.utils.data.dataloader as _dl\n"
                     "import time as _t\n"
                     "def _spin():\n"
                     "    while True:\n"
                     "        _t.sleep(0.05)\n"
                     "_dl.threading.Thread(target=_spin, daemon=False).start()"),
         *FAIL_OR_LOW),
    case("del_trick",
         with_prefix(f"{OS}\n"
                     "class _Bomb:\n"
                     "    def __del__(self):\n"
                     "        _os._exit(0)\n"
                     "_b = _Bomb()\n"
                     "del _b"),
         "STATUS_NO_RESULT"),
    case("monkeypatch_loss_to_zero",
         with_prefix("torch.nn.CrossEntropyLoss.forward = "
                     "lambda self, a, b: (a * 0).sum()\n"
                     "torch.isfinite = lambda t: torch.ones_like(t, dtype=torch.bool)"),
         "STATUS_LOW_ACCURACY"),
    case("forge_a_result",
         with_prefix(f"{OS}\n"
                     "import json as _json, struct as _struct\n"
                     "_h = _json.dumps({'last_stage': 7, 'status': 1, 'message': 'forged',"
                     " 'outputs_shape': [359, 10]}).encode()\n"
                     "_body = b'NLR1' + _struct.pack('>I', len(_h)) + _h + bytes(359 * 40)\n"
                     "for _fd in range(3, 64):\n"
                     "    try:\n"
                     "        _os.write(_fd, b'R' + _struct.pack('>I', len(_body)) + _body)\n"
                     "    except OSError:\n"
                     "        pass\n"
                     "_os._exit(0)"),
         "STATUS_LOW_ACCURACY", "STATUS_NO_RESULT"),
    case("forge_internal_error_status",
         with_prefix(FORGE + "_forge({'last_stage': 2, 'status': 22, 'message': 'not my fault'})"),
         "STATUS_NO_RESULT"),
    case("forge_oversized_outputs",
         with_prefix(FORGE + "_forge({'last_stage': 7, 'status': 1, 'outputs_shape': "
                     "[359, 55710]}, bytes(359 * 55710 * 4))"),
         "STATUS_NO_RESULT"),
    # Prints its ids, capabilities and uid map: test_adversarial checks that it is the sandbox
    # uid, not its worker's (root, or uid 0 of bubblewrap's user namespace when non-root).
    case("report_own_ids",
         with_prefix(f"{OS}\n"
                     "def _read(_p):\n"
                     "    _fd = _os.open(_p, _os.O_RDONLY)\n"
                     "    try:\n"
                     "        return _os.read(_fd, 4096).decode()\n"
                     "    finally:\n"
                     "        _os.close(_fd)\n"
                     "_caps = [_l.split()[1] for _l in _read('/proc/self/status').splitlines()\n"
                     "         if _l.startswith('CapEff:')][0]\n"
                     "_map = ' '.join(_read('/proc/self/uid_map').split())\n"
                     "print(f'ids uid={_os.getuid()} euid={_os.geteuid()} gid={_os.getgid()}'\n"
                     "      f' caps={_caps} map={_map};')"),
         *FAIL_OR_LOW),
    case("keyboard_interrupt", with_prefix("raise KeyboardInterrupt"), "STATUS_IMPORT_ERROR"),
    case("sysv_shared_memory",
         with_prefix("import numpy.ctypeslib as _nc\n"
                     "_libc = _nc.ctypes.CDLL(None)\n"
                     "_id = _libc.shmget(0x4E41534C, 512 << 20, 0o1666)\n"
                     "print('segment', _id)"),
         "STATUS_SANDBOX_VIOLATION"),
    case("many_files_in_tmp",
         with_prefix(f"{OS}\n"
                     "for _i in range(200_000):\n"
                     "    _os.close(_os.open(f'/tmp/f{_i}', _os.O_CREAT | _os.O_WRONLY))"),
         "STATUS_IMPORT_ERROR"),
    case("deep_directory_tree",
         with_prefix(f"{OS}\n"
                     "_os.chdir('/tmp')\n"
                     "for _i in range(3000):\n"
                     "    _os.mkdir('d')\n"
                     "    _os.chdir('d')"),
         *FAIL_OR_LOW),
    case("read_system_dist_packages", with_prefix(READ_SYSTEM_PACKAGES), *FAIL_OR_LOW,
         not_in_output=("SYSTEM-PACKAGES-SEEN", SYSTEM_MARKER_VALUE)),
    # --- integrity (issue 11): accuracy that was not earned ---
    case("rebuild_labels_from_sklearn", ig.REBUILD_FROM_SKLEARN, "STATUS_FORWARD_EXCEPTION",
         message="missing module 'sklearn'"),
    case("find_dataset_files", ig.FIND_DATASET_FILES, *FAIL_OR_LOW,
         not_in_output=("FOUND-DATASET",)),
    case("labels_by_test_position", ig.labels_by_position(), *FAIL_OR_LOW, max_accuracy=0.3),
    case("test_set_copy_in_code", ig.TEST_SET_COPY_IN_CODE, "STATUS_SYNTAX_ERROR",
         message="larger than"),
    case("replayed_batches", ig.REPLAYED_BATCHES, "STATUS_PROTOCOL_VIOLATION",
         message="samples"),
    case("second_optimizer", ig.SECOND_OPTIMIZER, "STATUS_PROTOCOL_VIOLATION"),
    case("test_time_training", ig.TEST_TIME_TRAINING, "STATUS_PROTOCOL_VIOLATION",
         message="while the test inputs were scored"),
    case("train_on_test_inputs_from_file", ig.TRAIN_ON_TEST_INPUTS, *FAIL_OR_LOW,
         not_in_output=("FOUND-TEST-INPUTS",)),
    case("hidden_parameters", ig.HIDDEN_PARAMETERS, "STATUS_PARAMETER_LIMIT"),
    case("forged_counts", ig.FORGED_COUNTS, "STATUS_PROTOCOL_VIOLATION",
         message="counters were removed"),
    case("nested_report_frame", ig.nested_frame(), "STATUS_NO_RESULT"),
    case("signal_the_parent", ig.SIGNAL_THE_PARENT, *FAIL_OR_LOW),
    case("relimit_the_parent", ig.RELIMIT_THE_PARENT, *FAIL_OR_LOW),
    case("posix_message_queue", ig.syscall(240, "b'/q'", "64", "0o600", "0"),
         "STATUS_SANDBOX_VIOLATION"),
    case("memfd_create", ig.syscall(319, "b'x'", "0"), "STATUS_SANDBOX_VIOLATION"),
    case("userfaultfd", ig.syscall(323, "0"), "STATUS_SANDBOX_VIOLATION"),
    case("io_uring_setup", ig.syscall(425, "1", "0"), "STATUS_SANDBOX_VIOLATION"),
    case("keyctl", ig.syscall(250, "0"), "STATUS_SANDBOX_VIOLATION"),
    case("perf_event_open", ig.syscall(298, "0", "0", "-1", "-1", "0"),
         "STATUS_SANDBOX_VIOLATION"),
    case("process_vm_readv", ig.syscall(310, "1", "0", "0", "0", "0", "0"),
         "STATUS_SANDBOX_VIOLATION"),
]  # fmt: skip
