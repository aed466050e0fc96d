"""`EngineLog`: vLLM's output goes to a file; its warnings reach the caller's log once (no vLLM needed)."""

from __future__ import annotations

import logging
import os

from mentorgym.agents.vllm_engine import EngineLog


def test_engine_output_goes_to_the_file_and_warnings_are_summarized_once(tmp_path, capfd) -> None:
    logger = logging.getLogger("vllm")
    saved = (list(logger.handlers), logger.propagate, logger.level)
    logger.setLevel(logging.INFO)  # as vLLM configures it
    path = tmp_path / "run" / "vllm.log"
    log = EngineLog(path)
    try:
        with log.capture():  # what vLLM writes while it starts: log lines and C++ noise
            os.write(1, b"(MainProcess pid=1) INFO 12-08 [core.py:1] init engine took 5 s\n")
            os.write(1, b"(MainProcess pid=1) WARNING 12-08 [layerwise.py:266] ")
            os.write(1, b"RotaryEmbedding: Failed to load weights\n")
            os.write(2, b"(MainProcess pid=1) WARNING 12-08 [x.py:1] Something new broke\n")
            os.write(2, b"[W1208 utils.cpp:68] Warning: NUMA binding\n")
        log.started(3.0)
        logging.getLogger("vllm.model_executor").warning("Something new broke")  # seen already
        logging.getLogger("vllm.model_executor").warning("RotaryEmbedding: Failed to load weights")
        logging.getLogger("vllm.worker").warning("Following weights were not loaded: {'x'}")
        logging.getLogger("vllm.worker").info("Reloading weights inplace...")
        log.report_new()
        log.report_new()
    finally:
        logger.handlers[:] = saved[0]
        logger.propagate = saved[1]
        logger.setLevel(saved[2])
    out = capfd.readouterr()
    shown = out.out + out.err
    assert "init engine" not in shown and "NUMA" not in shown and "pid=1" not in shown
    assert shown.count("vllm: engine started in 3 s") == 1
    assert "RotaryEmbedding's cos/sin cache is computed" in shown  # named once, as harmless
    assert "Failed to load weights" not in shown
    assert shown.count("Something new broke") == 1
    assert shown.count("Following weights were not loaded") == 1
    text = path.read_text()
    assert "NUMA binding" in text and "init engine" in text and "Reloading weights" in text
