"""FineShapes: the embedded, procedurally generated fine-grained captioning world."""
from captioning.fineshapes.language import eval_phrases, full_description, raw_caption, reference_caption
from captioning.fineshapes.parser import Mention, Parse, parse, scene_claims
from captioning.fineshapes.world import Obj, Scene, relation_holds, sample_scene

__all__ = [
    "Mention", "Obj", "Parse", "Scene", "eval_phrases", "full_description", "parse", "raw_caption",
    "reference_caption", "relation_holds", "sample_scene", "scene_claims",
]
