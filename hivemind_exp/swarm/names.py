"""Stable, human-readable pseudonyms for peers ("quick-amber-otter").

A peer's name is a pure function of its peer ID (SHA-256 of the ID picks one word from
each of three lists), so every node, the dashboard and the logs agree on it without
talking to each other. About 10 million combinations: two peers share a name with
probability ~1e-7, so among 500 peers a clash happens in ~1% of swarms; `pseudonyms`
makes names unique within a group anyway by suffixing "-2", "-3" in peer-ID order.

The word lists and the hash salt are part of the public contract: changing them renames
every peer on every dashboard. Append-only edits are not safe either (indices shift);
bump NAME_SCHEME and keep the old lists if they ever must change.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

NAME_SCHEME = "rl-swarm-name/v1"

_TRAITS = """
able agile alert amiable ample ancient arctic ardent artful astute austere avid bold
brave breezy bright brisk bubbly busy calm candid carefree careful casual cheeky
cheerful chilly civil clever cosmic cozy crafty crisp curious dainty daring dapper
dashing deft devoted diligent dizzy dreamy droll dusty eager early earnest easy elegant
eloquent endless epic exotic fabled fair faithful famous fancy fearless feisty fierce
fiery flashy fleet fluffy flying fond frank free fresh friendly frosty frugal funny
fuzzy gallant gentle giant giddy gifted glad gleaming glorious graceful grand grateful
great gritty grumpy happy hardy harmless hasty hearty helpful heroic hidden honest
hopeful humble hungry icy idle jaunty jolly jovial joyful jumpy keen kind kindly lanky
large lavish lazy leafy lively lofty loud loyal lucky lunar majestic mellow merry
mighty mild misty modest moody mossy nifty nimble noble noisy nomadic odd patient
peaceful peppy perky placid playful plucky plush polished polite posh precise prickly
proud prudent quaint quick quiet quirky radiant rapid rare ready regal robust rowdy
rugged rustic safe savvy scrappy serene sharp shiny shy silent silly sleek sleepy
slender slick slim sly smart smooth snappy snug soaring sociable soft solar solid
sparkly speedy spicy spirited spry stable stealthy steady stormy stout striped strong
sturdy sunny super sweet swift tall tame tangy tender thankful thrifty tidy timid tiny
tough tranquil tricky trusty twinkly unique upbeat valiant vast vibrant vigilant vivid
wacky warm wary whimsical wild wise witty wobbly woolly zany zealous zesty balmy
blissful bouncy buoyant chirpy clumsy comfy dazzling dutiful fabulous festive fickle
flawless floppy fragrant gusty handy hazy humming lucid merciful nocturnal peculiar
""".split()

_HUES = """
amber amethyst aqua ash auburn azure bamboo basalt beige birch black blond blue brass
bronze brown burgundy butter canary caramel carmine cedar cerise chalk charcoal cherry
chestnut cinder cinnamon citrine clay cobalt cocoa copper coral cotton cream crimson
cyan denim ebony emerald fawn flint frost fuchsia garnet ginger glass gold granite
graphite green grey hazel hickory honey indigo iron ivory jade jasper jet khaki lapis
lavender lemon lilac lime linen magenta mahogany maple marble marigold maroon mauve
mint mocha mulberry mustard navy nickel oak obsidian ochre olive onyx opal orange
orchid paper peach pearl pewter pine pink platinum plum pumpkin purple quartz red rose
rosewood ruby ruddy russet rust sable saffron sage sand sapphire satin scarlet sepia
shale sienna silk silver slate smoky snowy spruce steel stone straw sunset tan
tangerine taupe tawny teal tin topaz tulip turquoise umber velvet violet walnut wheat
white willow wine yellow zinc
""".split()

_ANIMALS = """
aardvark albatross alligator alpaca anaconda ant anteater antelope armadillo baboon
badger bandicoot barracuda bat bear beaver bee beetle beluga bison boar bobcat bonobo
buffalo bull butterfly buzzard camel capybara caracal caribou cassowary cat caterpillar
chameleon cheetah chicken chimpanzee chinchilla chipmunk cicada clam cobra cockatoo
condor cormorant cougar cow coyote crab crane cricket crocodile crow cuckoo deer dingo
dodo dolphin donkey dormouse dove dragonfly duck dugong eagle echidna eel egret eland
elephant elk emu ermine falcon fennec ferret finch firefly flamingo fox frog gannet
gazelle gecko gerbil gibbon giraffe gnat gnu goat goose gopher gorilla grasshopper
grizzly grouse gull guppy haddock halibut hamster hare hawk hedgehog heron herring
hippo hornet horse hummingbird hyena ibex ibis iguana impala jackal jackrabbit jaguar
jay jellyfish kangaroo kestrel kingfisher kiwi koala koi kookaburra krill ladybug lark
lemming lemur leopard lion lizard llama lobster locust loon lynx macaw mackerel magpie
mallard manatee mandrill mantis marmot marten meerkat mink minnow mole mongoose monkey
moose mosquito moth mouse mule mussel narwhal nautilus newt nightingale ocelot octopus
okapi opossum orca oriole osprey ostrich otter owl ox oyster panda pangolin panther
parakeet parrot partridge peacock pelican penguin pheasant pig pigeon platypus pony
porcupine porpoise possum puffin puma python quail rabbit raccoon ram rat raven
reindeer rhino robin salamander sandpiper sardine scorpion seahorse seal shark sheep
shrew shrimp skunk sloth slug snail snake sparrow spider squid squirrel starling
stingray stork swallow swan tapir tarsier termite tern tiger toad tortoise toucan trout
tuna turkey turtle viper vulture wallaby walrus warthog wasp weasel whale wildcat wolf
wolverine wombat woodpecker worm wren yak zebra
""".split()

WORD_LISTS: tuple[tuple[str, ...], ...] = (tuple(_TRAITS), tuple(_HUES), tuple(_ANIMALS))
NAME_SPACE = len(_TRAITS) * len(_HUES) * len(_ANIMALS)

_NON_NAME = re.compile(r"[^a-z0-9]+")


def _peer_key(peer_id: object) -> str:
    # hivemind.PeerID prints as base58; accept it as well as the string form.
    to_base58 = getattr(peer_id, "to_base58", None)
    text = to_base58() if callable(to_base58) else peer_id
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if not isinstance(text, str) or not text:
        raise ValueError(f"peer id must be a non-empty string (base58 peer ID), got {peer_id!r}")
    return text


def peer_name(peer_id: object) -> str:
    """The stable pseudonym of one peer, e.g. "quick-amber-otter"."""
    digest = hashlib.sha256(f"{NAME_SCHEME}:{_peer_key(peer_id)}".encode()).digest()
    words = [
        words[int.from_bytes(digest[8 * i : 8 * i + 8], "big") % len(words)]
        for i, words in enumerate(WORD_LISTS)
    ]
    return "-".join(words)


def normalize_name(text: str | None) -> str:
    """Lower-case, hyphen-separated form of a name someone typed ("Quick Amber_Otter!" -> "quick-amber-otter")."""
    if not text:
        return ""
    return _NON_NAME.sub("-", text.strip().lower()).strip("-")


def pseudonyms(peer_ids: Iterable[object]) -> dict[str, str]:
    """Unique names for a group of peers: peer id -> name.

    Peers are taken in sorted peer-id order; a peer whose base name is already taken gets
    "-2", "-3", ... so the mapping is the same on every node that sees the same group.
    """
    keys = sorted({_peer_key(p) for p in peer_ids})
    out: dict[str, str] = {}
    used: set[str] = set()
    for key in keys:
        base = peer_name(key)
        name, n = base, 1
        while name in used:
            n += 1
            name = f"{base}-{n}"
        used.add(name)
        out[key] = name
    return out


def name_to_peer_candidates(name: str, peer_ids: Iterable[object]) -> list[str]:
    """Every peer id (sorted) among `peer_ids` whose name is `name` (typed loosely).

    Matches the base name of each peer, and also the suffixed form `pseudonyms` gives to
    clashing peers, so "quick-amber-otter-2" finds exactly that peer.
    """
    wanted = normalize_name(name)
    if not wanted:
        return []
    keys = sorted({_peer_key(p) for p in peer_ids})
    base_matches = [k for k in keys if peer_name(k) == wanted]
    if base_matches:
        return base_matches
    group = pseudonyms(keys)
    return [k for k in keys if group[k] == wanted]


def is_generated_name(name: str) -> bool:
    """True when `name` has the adjective-hue-animal shape (optionally with a -N suffix)."""
    parts = normalize_name(name).split("-")
    if len(parts) == 4 and parts[3].isdigit():
        parts = parts[:3]
    return len(parts) == 3 and all(p in words for p, words in zip(parts, WORD_LISTS, strict=True))
