"""The seed's HTTP services, served by this project's backends (FastAPI apps run with uvicorn):

- `python -m pipeline.services.flux`    Flux image generation, port 8001 (POST /generate, GET /health)
- `python -m pipeline.services.vision`  CLIP alignment + aesthetic scoring, port 8002 (POST /analyze, GET /health)
"""
