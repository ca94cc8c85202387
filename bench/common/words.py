"""The vocabulary of synthetic prompts: plain, common words, each a token or two in any
tokenizer, drawn at random so that no two prompts share a prefix by accident."""

WORDS = (
    "the a of to and in is it that for on with as this by from at be are was not or an which "
    "have one all can when will each value list file name return object string number data "
    "time new set first call line class type default module error result given used way read "
    "write open close start end order key map path test block cache token image model"
).split()
# words about pictures, for prompts that go with images
IMAGE_WORDS = (
    "page frame scene table chart figure text left right top bottom colour shape count describe"
).split()
