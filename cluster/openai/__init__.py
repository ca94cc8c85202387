"""The OpenAI-compatible HTTP API, served by the ingress deployment next to gRPC.

routes.py                the FastAPI app: auth, body limits, the endpoints
protocol.py              request bodies (pydantic), what is accepted and what refused
request_conversion.py    a body -> one GenerateRequest (then the Frontend, as for gRPC)
chat_completions.py      a chat answer, whole or streamed
chat_stream.py           GenerationSteps -> chat.completion.chunk bodies (tool-call deltas)
completions.py           a text completion, whole or streamed
delivery.py              whole answers, and server-sent events
responses.py             response bodies: ids, usage, finish reasons
errors.py                OpenAI's error object, HTTP statuses, Retry-After
responses_protocol.py    the Responses API's body: input items, function tools, text format
responses_conversion.py  its items -> a prefix-stable conversation -> one GenerateRequest
responses_api.py         its handlers: create (whole or streamed), get, delete, cancel
response_object.py       its response object: output items, usage, status
responses_events.py      GenerationSteps -> its server-sent events
response_store.py        stored responses (SQLite), their retention and config
"""
