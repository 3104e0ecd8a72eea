"""
PairCap caption metrics: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, SPICE and SPIDEr, computed by the COCO caption tools
(pycocoevalcap 1.2), so scores match the numbers audio-captioning papers report.

This file is an `evaluate` metric module that stands alone (it imports no project code, so it can be pushed to the Hub
as it is) and it is also the single implementation behind `paircap.metrics.compute_caption_metrics`, which loads it
by path. The scoring is pycocoevalcap's own: its PTB tokenizer jar, its BLEU / ROUGE-L / CIDEr-D scorers, its METEOR
wrapper talking to its METEOR 1.5 jar, its SPICE jar. What this file adds is the plumbing around the jars: which `java`
runs them, temporary files outside site-packages, one tokenizer run for the whole corpus (predictions and references
together), a METEOR process that is started once and reused, and SPICE reported as unavailable, with the reason,
where the Stanford CoreNLP jars it needs are missing. The DCASE-2024 additions (FENSE, SPIDEr-FL, Vocab, SPIDEr-max)
use `paircap_fense.py` beside it, which evaluate.load copies along.
"""

import atexit
import contextlib
import json
import math
import os
import shutil
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import evaluate
import numpy as np
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor import meteor as coco_meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.spice import spice as coco_spice
from pycocoevalcap.tokenizer import ptbtokenizer as coco_ptb

from .paircap_fense import (
    error_probabilities,
    find_echecker,
    find_sbert,
    fluency_penalised,
    metrics_cache,
    sbert_similarities,
)

ALL_METRICS = ("bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider_d", "spice", "spider")
DCASE2024_METRICS = ("spider_fl", "fense", "vocab", "spider_max")
SPICE_JARS_ENV = "PAIRCAP_SPICE_JARS"
CORENLP_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
JAVA_INSTALL_HINT = (
    "The COCO caption tools (PTB tokenizer, METEOR 1.5, SPICE) are Java programs: install a Java runtime, version 8 "
    "or newer (e.g. `apt-get install default-jre-headless`, `conda install -c conda-forge openjdk` or "
    "`brew install openjdk`), then put `java` on PATH, set JAVA_HOME, or pass java='/path/to/bin/java'."
)
# Characters the PTB lexer ends a line on: they would shift every following caption onto the wrong item.
_LINE_BREAKS = str.maketrans(dict.fromkeys("\n\r\x0b\x0c\x85\u2028\u2029", " "))
# Java 16+ refuses the reflective access SPICE's parse cache (FST serialisation) needs; JDK_JAVA_OPTIONS is read by
# the launcher of Java 9+ only, so Java 8 (which rejects --add-opens) is left alone.
_SPICE_ADD_OPENS = " ".join(
    f"--add-opens=java.base/{package}=ALL-UNNAMED"
    for package in ("java.lang", "java.util", "java.math", "java.net", "java.text", "java.util.concurrent", "java.io")
)


class JavaNotFoundError(RuntimeError):
    """No usable `java` executable for the COCO caption tools."""


@dataclass
class CaptionScores:
    """
    Corpus and per-item (sentence) scores of every requested metric, in the order requested. A metric that could not
    be computed here (SPICE / SPIDEr without the Stanford CoreNLP jars) is None in `corpus` and `sentence`, and
    `unavailable` maps it to the reason; it is never reported as 0.
    """

    corpus: dict[str, float | None]
    sentence: dict[str, list[float] | None]
    unavailable: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Corpus scores (None where unavailable) plus an "unavailable" entry: what the `evaluate` metric returns."""
        return {**self.corpus, "unavailable": dict(self.unavailable)}


def find_java(java: str | os.PathLike | None = None) -> str:
    """
    The `java` executable to run the jars with: the `java` argument (a path or a command name), else
    `$JAVA_HOME/bin/java`, else `java` on PATH (pycocoevalcap's own convention). Raises JavaNotFoundError otherwise.
    """
    if java is not None:
        found = shutil.which(os.fspath(java))
        if found is None:
            raise JavaNotFoundError(f"java={os.fspath(java)!r} is not an executable Java runtime. {JAVA_INSTALL_HINT}")
        return found
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        found = shutil.which("java", path=os.path.join(java_home, "bin"))
        if found is not None:
            return found
    found = shutil.which("java")
    if found is None:
        looked = f"JAVA_HOME={java_home!r} has no bin/java and " if java_home else "JAVA_HOME is unset and "
        raise JavaNotFoundError(f"No Java runtime found: {looked}there is no `java` on PATH. {JAVA_INSTALL_HINT}")
    return found


def ptb_tokenize(sentences: Sequence[str], java: str) -> list[str]:
    """
    pycocoevalcap's PTBTokenizer (Stanford CoreNLP 3.4.1 jar, `-preserveLines -lowerCase`, then its punctuation
    list removed) over all sentences in one Java run; the temporary file lives in the system temp folder rather than
    inside site-packages.
    """
    jar = Path(coco_ptb.__file__).parent / coco_ptb.STANFORD_CORENLP_3_4_1_JAR
    with tempfile.TemporaryDirectory(prefix="paircap-ptb-") as folder:
        path = os.path.join(folder, "captions.txt")
        with open(path, "w", encoding="utf-8", newline="\n") as handle:
            handle.write("\n".join(sentence.translate(_LINE_BREAKS) for sentence in sentences))
        command = [java, "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase", path]
        done = subprocess.run(command, capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"The PTB tokenizer failed ({' '.join(command)}): {_tail(done.stderr)}")
    lines = done.stdout.decode("utf-8").split("\n")
    if len(lines) < len(sentences) or any(line.strip() for line in lines[len(sentences) :]):
        raise RuntimeError(f"The PTB tokenizer returned {len(lines)} lines for {len(sentences)} captions")
    return [
        " ".join(word for word in line.rstrip().split(" ") if word not in coco_ptb.PUNCTUATIONS)
        for line in lines[: len(sentences)]
    ]


class _MeteorProcess(coco_meteor.Meteor):
    """
    pycocoevalcap's METEOR wrapper (its `compute_score` and `_stat`, one SCORE line per item then one EVAL line) over
    its METEOR 1.5 jar, started with a chosen java and UTF-8 I/O. Loading METEOR's paraphrase table takes seconds, so
    the process is kept and reused across calls (see `close_java_processes`).
    """

    def __init__(self, java: str):
        self.meteor_cmd = [java, "-Dfile.encoding=UTF-8", "-jar", "-Xmx2G", coco_meteor.METEOR_JAR]
        self.meteor_cmd += ["-", "-", "-stdio", "-l", "en", "-norm"]
        self.owner_pid = os.getpid()
        self.stderr_file = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the process)
        self.meteor_p = subprocess.Popen(
            self.meteor_cmd,
            cwd=os.path.dirname(os.path.abspath(coco_meteor.__file__)),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr_file,
        )
        self.lock = threading.Lock()

    def usable(self) -> bool:
        return self.owner_pid == os.getpid() and self.meteor_p.poll() is None

    def stderr_tail(self) -> str:
        self.stderr_file.seek(0)
        return _tail(self.stderr_file.read())

    def close(self) -> None:
        process = getattr(self, "meteor_p", None)
        if process is not None and self.owner_pid == os.getpid() and process.poll() is None:
            with contextlib.suppress(OSError):
                process.stdin.close()
            process.kill()
            process.wait()
        if getattr(self, "stderr_file", None) is not None:
            self.stderr_file.close()

    def __del__(self):
        # replaces the library's __del__, which waits on a lock an interrupted compute_score never releases
        with contextlib.suppress(Exception):
            self.close()


# One METEOR process per java executable for the whole interpreter, shared by every copy of this file (paircap.metrics
# loads it by path and evaluate.load imports its own copy): kept on pycocoevalcap's meteor module, which both import.
_METEOR: dict[str, _MeteorProcess] = coco_meteor.__dict__.setdefault("_paircap_meteor_processes", {})
_METEOR_LOCK: threading.Lock = coco_meteor.__dict__.setdefault("_paircap_meteor_lock", threading.Lock())
_WARNED: set[str] = set()


def close_java_processes() -> None:
    """Stop the METEOR process kept between calls (about 1 GB of memory); the next call starts a new one."""
    with _METEOR_LOCK:
        while _METEOR:
            _METEOR.popitem()[1].close()


atexit.register(close_java_processes)


def _meteor(gts: dict, res: dict, java: str) -> tuple[float, list[float]]:
    with _METEOR_LOCK:
        process = _METEOR.pop(java, None)
        if process is not None and not process.usable():
            process.close()  # it died, or it belongs to the parent of this forked process (close leaves it alone)
            process = None
        if process is None:
            process = _MeteorProcess(java)
        try:
            score, scores = process.compute_score(gts, res)
        except (OSError, ValueError) as error:
            message = f"METEOR 1.5 ({' '.join(process.meteor_cmd)}) failed: {process.stderr_tail() or error!r}"
            process.close()
            raise RuntimeError(message) from error
        _METEOR[java] = process
    return score, scores


def spice_jars_missing() -> tuple[Path, list[str]]:
    """
    The folder holding the Stanford CoreNLP 3.6.0 jars SPICE needs (`$PAIRCAP_SPICE_JARS`, else `spice/` of the
    metrics cache where `paircap metrics download` puts them, else pycocoevalcap's own `spice/lib/`, where its
    `get_stanford_models` puts them) and the jar names missing from it.
    """
    folder = os.environ.get(SPICE_JARS_ENV)
    downloaded = metrics_cache() / "spice"
    if folder:
        folder = Path(folder).expanduser()
    elif all((downloaded / name).is_file() for name in CORENLP_JARS):
        folder = downloaded
    else:
        folder = Path(coco_spice.__file__).parent / "lib"
    return folder, [name for name in CORENLP_JARS if not (folder / name).is_file()]


def _spice_missing_reason(folder: Path, missing: list[str]) -> str:
    default = Path(coco_spice.__file__).parent / "lib"
    return (
        f"SPICE needs the Stanford CoreNLP 3.6.0 jars, missing from {folder}: {', '.join(missing)}. Put "
        f"{' and '.join(CORENLP_JARS)} (from stanford-corenlp-full-2015-12-09.zip, which `python -m "
        f"pycocoevalcap.spice.get_stanford_models` downloads and unpacks) in {default}, or set {SPICE_JARS_ENV} to a "
        "folder that holds them."
    )


def _spice(predictions: list[str], references: list[list[str]], java: str, jars: Path) -> tuple[float, list[float]]:
    """pycocoevalcap's SPICE 1.0 jar (`-subset -silent`, its `cache/` convention) with the CoreNLP jars from `jars`."""
    spice_dir = Path(coco_spice.__file__).parent
    default_jars = jars.resolve() == (spice_dir / "lib").resolve()
    classpath = [str(spice_dir / coco_spice.SPICE_JAR), str(spice_dir / "lib" / "*")]
    classpath += [str(jars / name) for name in CORENLP_JARS]
    cache = (spice_dir if default_jars else jars) / coco_spice.CACHE_DIR
    try:
        cache.mkdir(parents=True, exist_ok=True)
        cache_args = ["-cache", str(cache)]
    except OSError:
        cache_args = []  # a read-only install: SPICE runs without its parse cache
    env = dict(os.environ)
    env["JDK_JAVA_OPTIONS"] = f"{env.get('JDK_JAVA_OPTIONS', '')} {_SPICE_ADD_OPENS}".strip()
    with tempfile.TemporaryDirectory(prefix="paircap-spice-") as folder:
        inputs, outputs = os.path.join(folder, "input.json"), os.path.join(folder, "output.json")
        items = [
            {"image_id": i, "test": test, "refs": refs}
            for i, (test, refs) in enumerate(zip(predictions, references, strict=True))
        ]
        with open(inputs, "w", encoding="utf-8") as handle:
            json.dump(items, handle, indent=2)
        command = [java, "-Xmx8G", "-cp", os.pathsep.join(classpath), "edu.anu.spice.SpiceScorer", inputs]
        command += [*cache_args, "-out", outputs, "-subset", "-silent"]
        done = subprocess.run(command, capture_output=True, cwd=spice_dir, env=env)
        if done.returncode != 0 or not os.path.isfile(outputs):
            raise RuntimeError(f"SPICE failed ({' '.join(command)}): {_tail(done.stderr)}")
        with open(outputs, encoding="utf-8") as handle:
            results = json.load(handle)
    by_id = {item["image_id"]: _float(item["scores"]["All"]["f"]) for item in results}
    scores = [by_id[i] for i in range(len(predictions))]
    return float(np.mean(np.array(scores))), scores


def compute_caption_metrics(
    predictions: Sequence[str],
    references: Sequence[Sequence[str] | str],
    metrics: Sequence[str] = ALL_METRICS,
    java: str | os.PathLike | None = None,
    candidates: Sequence[Sequence[str]] | None = None,
) -> CaptionScores:
    """
    Score one predicted caption per item against that item's references (any number, at least one; a single string
    counts as one reference) with the COCO caption tools: PTB tokenisation, then BLEU-1..4, METEOR 1.5, ROUGE-L,
    CIDEr-D, SPICE and SPIDEr (the mean of CIDEr-D and SPICE). Corpus scores are the tools' own (BLEU and METEOR
    aggregate their statistics over the corpus; ROUGE-L, CIDEr-D and SPICE average the item scores).

    SPICE and SPIDEr need the Stanford CoreNLP 3.6.0 jars (see `spice_jars_missing`); where they are missing both are
    None, listed in `unavailable` with the reason, and a warning says once which files to put where.

    The DCASE-2024 additions (`DCASE2024_METRICS`, see `_dcase2024`): SPIDEr-FL, FENSE, Vocab and, given
    `candidates` (several captions per item, e.g. an n-best list), SPIDEr-max; unavailable with the reason where
    their weights (or SPICE) are missing. Raises
    ValueError / TypeError for malformed inputs and JavaNotFoundError without a Java runtime.
    """
    predictions, references = _check_inputs(predictions, references)
    if isinstance(metrics, str):
        metrics = (metrics,)
    metrics = tuple(dict.fromkeys(metrics))
    unknown = [name for name in metrics if name not in ALL_METRICS + DCASE2024_METRICS]
    if unknown:
        raise ValueError(f"Unknown metric(s) {unknown}; choose from {list(ALL_METRICS + DCASE2024_METRICS)}")
    java = find_java(java)

    tokens = ptb_tokenize(predictions + [ref for refs in references for ref in refs], java)
    res = {i: [tokens[i]] for i in range(len(predictions))}
    gts, start = {}, len(predictions)
    for i, refs in enumerate(references):
        gts[i], start = tokens[start : start + len(refs)], start + len(refs)

    corpus: dict[str, float | None] = {}
    sentence: dict[str, list[float] | None] = {}
    unavailable: dict[str, str] = {}
    wanted = set(metrics)
    if wanted & {"bleu_1", "bleu_2", "bleu_3", "bleu_4"}:
        score, scores = Bleu(4).compute_score(gts, res, verbose=0)
        for n in range(4):
            corpus[f"bleu_{n + 1}"], sentence[f"bleu_{n + 1}"] = _floats(score[n], scores[n])
    if "meteor" in wanted:
        corpus["meteor"], sentence["meteor"] = _floats(*_meteor(gts, res, java))
    if "rouge_l" in wanted:
        corpus["rouge_l"], sentence["rouge_l"] = _floats(*Rouge().compute_score(gts, res))
    if wanted & {"spider_fl", "spider_max"}:
        wanted |= {"spider"}
    if wanted & {"cider_d", "spider"}:
        corpus["cider_d"], sentence["cider_d"] = _floats(*Cider().compute_score(gts, res))
    if wanted & {"spice", "spider"}:
        jars, missing = spice_jars_missing()
        reason = _spice_missing_reason(jars, missing) if missing else None
        if reason is None:
            try:
                corpus["spice"], sentence["spice"] = _floats(
                    *_spice([res[i][0] for i in res], [gts[i] for i in gts], java, jars)
                )
            except (RuntimeError, OSError, ValueError, KeyError) as error:
                reason = str(error)
        if reason is None:
            corpus["spider"] = (corpus["cider_d"] + corpus["spice"]) / 2
            sentence["spider"] = [(c + s) / 2 for c, s in zip(sentence["cider_d"], sentence["spice"], strict=True)]
        else:
            _warn_once(f"SPICE and SPIDEr are unavailable: {reason}")
            unavailable["spice"] = reason
            unavailable["spider"] = f"SPIDEr = (CIDEr-D + SPICE) / 2 needs SPICE. {reason}"
            corpus["spice"] = corpus["spider"] = sentence["spice"] = sentence["spider"] = None
    if wanted & set(DCASE2024_METRICS):
        extra = _dcase2024(predictions, references, tokens[: len(predictions)], wanted, sentence, unavailable)
        for name, (score, scores) in extra.items():
            corpus[name], sentence[name] = score, scores
        if "spider_max" in wanted:
            corpus["spider_max"], sentence["spider_max"] = _spider_max(candidates, references, java, unavailable)
    return CaptionScores(
        corpus={name: corpus[name] for name in metrics},
        sentence={name: sentence[name] for name in metrics},
        unavailable={name: reason for name, reason in unavailable.items() if name in metrics},
    )


def _dcase2024(predictions, references, tokens, wanted, sentence, unavailable) -> dict:
    """Vocab (distinct PTB tokens over all candidates), FENSE and SPIDEr-FL (see paircap_fense): `{name: (corpus,
    sentence)}`, None where unavailable (the reason goes into `unavailable`)."""
    out: dict[str, tuple] = {}
    if "vocab" in wanted:
        vocab = float(len({word for line in tokens for word in line.split()}))
        out["vocab"] = (vocab, None)  # a corpus statistic: no per-item score
    if not wanted & {"fense", "spider_fl"}:
        return out
    sbert, sbert_missing = find_sbert() if "fense" in wanted else (None, "")
    echecker, echecker_missing = find_echecker()
    needs_probs = ("fense" in wanted and sbert is not None) or ("spider_fl" in wanted and sentence.get("spider"))
    probs = None
    if echecker is not None and needs_probs:
        try:
            probs = error_probabilities(predictions, echecker)
        except (OSError, ValueError, KeyError, RuntimeError) as error:  # e.g. its encoder's config not cached
            echecker_missing = f"the FENSE error detector {echecker} cannot be loaded: {error}"
    if "fense" in wanted:
        similarities, reasons = None, [reason for reason in (sbert_missing, echecker_missing) if reason]
        if not reasons:
            try:
                similarities = sbert_similarities(predictions, references, sbert)
            except (OSError, ValueError) as error:
                reasons = [f"the SBERT model {sbert} cannot be loaded: {error}"]
        if reasons:
            unavailable["fense"] = f"FENSE is unavailable: {'; '.join(reasons)}"
            out["fense"] = (None, None)
        else:
            scores = fluency_penalised(similarities, probs)
            out["fense"] = (float(np.mean(scores)), scores)
    if "spider_fl" in wanted:
        if sentence.get("spider") is None or probs is None:
            why = unavailable.get("spider") or echecker_missing
            unavailable["spider_fl"] = f"SPIDEr-FL = SPIDEr x fluency penalty is unavailable: {why}"
            out["spider_fl"] = (None, None)
        else:
            scores = fluency_penalised(sentence["spider"], probs)
            out["spider_fl"] = (float(np.mean(scores)), scores)
    return out


def _spider_max(candidates, references, java, unavailable) -> tuple[float | None, list[float] | None]:
    """Per item the best SPIDEr of its candidates (an n-best list), averaged: DCASE's SPIDEr-max."""
    if candidates is None:
        unavailable["spider_max"] = "SPIDEr-max needs several candidate captions per item (`candidates`)"
        return None, None
    candidates = [list(item) for item in candidates]
    if len(candidates) != len(references) or not all(candidates):
        raise ValueError("candidates must hold at least one caption for each of the items")
    flat = [caption for item in candidates for caption in item]
    flat_refs = [refs for item, refs in zip(candidates, references, strict=True) for _ in item]
    scores = compute_caption_metrics(flat, flat_refs, metrics=["spider"], java=java)
    if scores.sentence["spider"] is None:
        unavailable["spider_max"] = f"SPIDEr-max needs SPIDEr. {scores.unavailable['spider']}"
        return None, None
    bounds = np.cumsum([0, *(len(item) for item in candidates)])
    best = [max(scores.sentence["spider"][bounds[i] : bounds[i + 1]]) for i in range(len(candidates))]
    return float(np.mean(best)), best


def _check_inputs(predictions, references) -> tuple[list[str], list[list[str]]]:
    if isinstance(predictions, str) or isinstance(references, str):
        raise TypeError("predictions and references must be lists (one entry per item), not a single string")
    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references):
        raise ValueError(
            f"predictions and references differ in length: {len(predictions)} predictions but {len(references)} "
            "reference lists; give one list of reference captions per prediction"
        )
    if not predictions:
        raise ValueError("Nothing to score: predictions and references are empty")
    references = [[refs] if isinstance(refs, str) else list(refs) for refs in references]
    for i, (prediction, refs) in enumerate(zip(predictions, references, strict=True)):
        if not isinstance(prediction, str):
            raise TypeError(f"prediction {i} is a {type(prediction).__name__}, not a string")
        if not refs:
            raise ValueError(f"item {i} has no reference caption; each prediction needs at least one")
        if not all(isinstance(ref, str) for ref in refs):
            raise TypeError(f"the references of item {i} must all be strings")
    return predictions, references


def _floats(score, scores) -> tuple[float, list[float]]:
    return float(score), [float(value) for value in scores]


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _tail(data: bytes, size: int = 2000) -> str:
    return data.decode("utf-8", errors="replace").strip()[-size:]


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, UserWarning, stacklevel=3)


_CITATION = """\
@inproceedings{papineni2002bleu,
  title={BLEU: a Method for Automatic Evaluation of Machine Translation},
  author={Papineni, Kishore and Roukos, Salim and Ward, Todd and Zhu, Wei-Jing},
  booktitle={ACL}, year={2002}
}
@inproceedings{denkowski2014meteor,
  title={Meteor Universal: Language Specific Translation Evaluation for Any Target Language},
  author={Denkowski, Michael and Lavie, Alon},
  booktitle={Workshop on Statistical Machine Translation}, year={2014}
}
@inproceedings{lin2004rouge,
  title={ROUGE: A Package for Automatic Evaluation of Summaries},
  author={Lin, Chin-Yew},
  booktitle={Text Summarization Branches Out}, year={2004}
}
@inproceedings{vedantam2015cider,
  title={CIDEr: Consensus-based Image Description Evaluation},
  author={Vedantam, Ramakrishna and Zitnick, C. Lawrence and Parikh, Devi},
  booktitle={CVPR}, year={2015}
}
@inproceedings{anderson2016spice,
  title={SPICE: Semantic Propositional Image Caption Evaluation},
  author={Anderson, Peter and Fernando, Basura and Johnson, Mark and Gould, Stephen},
  booktitle={ECCV}, year={2016}
}
@inproceedings{liu2017spider,
  title={Improved Image Captioning via Policy Gradient Optimization of SPIDEr},
  author={Liu, Siqi and Zhu, Zhenhai and Ye, Ning and Guadarrama, Sergio and Murphy, Kevin},
  booktitle={ICCV}, year={2017}
}
@article{chen2015microsoft,
  title={Microsoft COCO Captions: Data Collection and Evaluation Server},
  author={Chen, Xinlei and Fang, Hao and Lin, Tsung-Yi and Vedantam, Ramakrishna and Gupta, Saurabh and Doll{\\'a}r,
    Piotr and Zitnick, C. Lawrence},
  journal={arXiv:1504.00325}, year={2015}
}
"""

_DESCRIPTION = """\
The caption metrics of automated audio captioning (DCASE) and image captioning, computed by the COCO caption
evaluation tools (pycocoevalcap 1.2): captions are PTB-tokenised (lower-cased, punctuation removed), then scored with
BLEU-1..4, METEOR 1.5, ROUGE-L, CIDEr-D, SPICE and SPIDEr = (CIDEr-D + SPICE) / 2. Needs Java. SPICE additionally
needs the Stanford CoreNLP 3.6.0 jars; without them SPICE and SPIDEr are returned as None with the reason. The
DCASE-2024 additions: SPIDEr-FL and FENSE (where the FENSE weights are found, else None with the reason), Vocab and,
given several candidates per item, SPIDEr-max.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): one predicted caption per item (may be empty).
    references (list of list of str): the reference captions of each item, any number per item (at least one);
        a plain string per item is one reference.
    metrics (list of str, optional): any of "bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider_d",
        "spice", "spider" (default: all), and the DCASE-2024 "spider_fl", "fense", "vocab", "spider_max".
    java (str, optional): the Java executable (default: $JAVA_HOME/bin/java, else `java` on PATH).
    candidates (list of list of str, optional): several captions per item, for "spider_max".
    return_sentence_scores (bool, optional): also return per-item scores under "sentence" (default: False).
Returns:
    One float per requested metric (None where it cannot be computed here) and "unavailable": {metric: reason}.
    CIDEr-D, and so SPIDEr, use the COCO tools' scale (CIDEr-D ranges from 0 to 10).
Examples:
    >>> metric = evaluate.load("metrics/paircap_caption_metrics")
    >>> results = metric.compute(
    ...     predictions=["a man is speaking", "rain falls"],
    ...     references=[["a man speaks.", "someone speaks.", "a man is speaking while a bird is chirping in the "
    ...                  "background"], ["rain is falling hard on a surface"]],
    ...     metrics=["bleu_1", "cider_d"],
    ... )
    >>> print(round(results["bleu_1"], 4), round(results["cider_d"], 4))
    0.4278 0.9614
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class PaircapCaptionMetrics(evaluate.Metric):
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr-D, SPICE and SPIDEr with the COCO caption tools."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Value("string", id="sequence"),
                        "references": datasets.Sequence(datasets.Value("string", id="sequence"), id="references"),
                    }
                ),
                datasets.Features(
                    {
                        "predictions": datasets.Value("string", id="sequence"),
                        "references": datasets.Value("string", id="sequence"),
                    }
                ),
            ],
            codebase_urls=["https://github.com/salaniz/pycocoevalcap"],
            reference_urls=[
                "https://github.com/tylin/coco-caption",
                "https://arxiv.org/abs/1504.00325",
                "https://github.com/peteanderson80/SPICE",
            ],
        )

    def _compute(
        self, predictions, references, metrics=ALL_METRICS, java=None, return_sentence_scores=False, candidates=None
    ):
        scores = compute_caption_metrics(predictions, references, metrics=metrics, java=java, candidates=candidates)
        results = scores.to_dict()
        if return_sentence_scores:
            results["sentence"] = scores.sentence
        return results
