"""The seed's HTTP services, served by this project's backends (FastAPI apps run with uvicorn):

- `python -m pipeline.services.flux`    Flux image generation, port 8001 (POST /generate, GET /health)
- `python -m pipeline.services.vision`  CLIP alignment + aesthetic scoring, port 8002 (POST /analyze, POST /score,
                                        GET /health); with --critic-model, /analyze's text from a vision model
- `python -m pipeline.services.vlm`     pairwise judgement by an Ollama vision model, port 8004 (POST /compare,
                                        /compare-alignment, /compare-aesthetics, /compare-batch, GET /health, ...)

Beside the three apps: `compat` (the original clients' request shapes and names), `confine` (file access only under
the folders the operator allowed), `load` (a bounded render queue, output retention), `vlm_answers` (the VLM
service's answers from a pair judged in both orders) and `protocol` (what travels between a service and its
clients; the only module here that the generation and scoring parts import).

May import every part it serves (it is at the top, like cli/).
"""
