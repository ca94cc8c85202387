"""Errors the engine raises for bad input. One class per failure, each mapped to one gRPC status
by the ingress (all of these are INVALID_ARGUMENT)."""


class InvalidRequestError(ValueError):
    """The request can never be served as given: fix the input and resend."""


class InvalidSamplingParamsError(InvalidRequestError):
    """A sampling parameter is out of range."""


class PromptTooLongError(InvalidRequestError):
    """The prompt does not fit the model's context or the worker's KV cache."""


class InvalidImageError(InvalidRequestError):
    """An image could not be decoded, or does not match the prompt's `<image>` slots."""


class LimitExceededError(InvalidRequestError):
    """The request passes a size limit (bytes, characters, images, pixels, tokens); the message
    names the limit and the value."""
