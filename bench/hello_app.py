"""The floor: the smallest Starlette JSON endpoint, served like the service is.

bench/run.py starts it with uvicorn and the service's options; the service's
throughput is reported as a fraction of this one's, measured in the same run.
"""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def hello(request: Request) -> JSONResponse:
    return JSONResponse({"hello": "world"})


app = Starlette(routes=[Route("/", hello)])
