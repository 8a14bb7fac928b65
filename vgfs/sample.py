"""Write a synthetic Visual Genome release in the official latest format.

It feeds the demo, the tests and the full-scale benchmarks, so it copies the shapes of the real
files, traps included: v1.4 `merged_object_ids`, relationship endpoints in both the `name` and
the `names` style, endpoints missing from v1.4 objects.json, missing `attributes` keys, empty
lists, predicates in mixed case, free text with quotes, unicode and trailing spaces.

Output is streamed entry by entry, so memory stays bounded at the full 108,077 images. Images are
generated in fixed chunks, each from its own seeded random stream, so the bytes depend only on
the seed and the parameters, never on how many processes did the work.
"""

from __future__ import annotations

import io
import itertools
import math
import os
import random
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import IO, NamedTuple

import orjson
from PIL import Image, ImageDraw

from vgfs.errors import VGFSError
from vgfs.progress import progress

JPEG_MODES = ("small", "real", "none")
URL = "https://cs.stanford.edu/people/rak248/{}/{}.jpg"
FOLDERS = ("VG_100K", "VG_100K_2")
CHUNK = 256  # images per unit of work; part of the output's definition, like the seed

# Per-image files in the order of a chunk's output; qa_to_region_mapping.json is streamed too.
PER_IMAGE_FILES = ("image_data.json", "objects.json", "attributes.json", "relationships.json",
                   "scene_graphs.json", "region_descriptions.json", "question_answers.json")
MAPPING_FILE = "qa_to_region_mapping.json"

# Image sizes as in VG (longest side mostly 800), with weights.
SIZES = (((800, 600), 40), ((800, 533), 14), ((600, 800), 8), ((800, 534), 6),
         ((640, 480), 6), ((533, 800), 5), ((800, 450), 4), ((800, 800), 3),
         ((500, 375), 4), ((500, 333), 4), ((800, 640), 2), ((782, 800), 1))

# Object names in rough VG frequency order: "name=synset" gets a plural "+s"/"+es"/"-y+ies",
# "name|plural=synset" an irregular one and "name=synset!" none. Some names hold spaces,
# a slash, an apostrophe or non-ASCII letters, as real names do.
OBJECTS = """\
man|men=man.n.01, window=window.n.01, tree=tree.n.01, person|people=person.n.01,
building=building.n.01, shirt=shirt.n.01, wall=wall.n.01, woman|women=woman.n.01,
sign=sign.n.02, sky=sky.n.01!, ground=land.n.04!, grass=grass.n.01!, light=light.n.02,
cloud=cloud.n.02, pole=pole.n.01, car=car.n.01, head=head.n.01, hand=hand.n.01,
water=water.n.01!, table=table.n.02, plate=plate.n.04, hair=hair.n.01!, leg=leg.n.01,
ear=ear.n.01, fence=fence.n.01, door=door.n.01, chair=chair.n.01, floor=floor.n.01,
road=road.n.01, line=line.n.01, street=street.n.01, hat=hat.n.01, snow=snow.n.02!,
jacket=jacket.n.01, boy=male_child.n.01, eye=eye.n.01, wheel=wheel.n.01, shadow=shadow.n.01,
plane=airplane.n.01, pants=trouser.n.01!, leaf|leaves=leaf.n.01, field=field.n.01,
girl=girl.n.01, nose=nose.n.01, bus=bus.n.01, train=train.n.01, handle=handle.n.01,
clock=clock.n.01, tail=tail.n.01, boat=boat.n.01, giraffe=giraffe.n.01, elephant=elephant.n.01,
shoe=shoe.n.01, umbrella=umbrella.n.01, sidewalk=sidewalk.n.01, horse=horse.n.01, bag=bag.n.01,
glass=glass.n.02!, bowl=bowl.n.03, counter=counter.n.01, dog=dog.n.01, cat=cat.n.01,
face=face.n.01, mouth=mouth.n.01, picture=picture.n.01, box=box.n.01, bench=bench.n.01,
cup=cup.n.01, rock=rock.n.01, mirror=mirror.n.01, zebra=zebra.n.01, bird=bird.n.01,
roof=roof.n.01, food=food.n.01!, shelf|shelves=shelf.n.01, book=book.n.01, bike=bicycle.n.01,
motorcycle=motorcycle.n.01, truck=truck.n.01, pizza=pizza.n.01, bottle=bottle.n.01,
player=player.n.01, lamp=lamp.n.01, flower=flower.n.01, bush=bush.n.01, helmet=helmet.n.02,
arm=arm.n.01, finger=finger.n.01, hill=hill.n.01, mountain=mountain.n.01, beach=beach.n.01,
wave=wave.n.01, sand=sand.n.01!, kite=kite.n.03, skateboard=skateboard.n.01,
surfboard=surfboard.n.01, ski=ski.n.01, racket=racket.n.04, ball=ball.n.01, bat=bat.n.05,
glove=glove.n.02, cap=cap.n.01, sock=sock.n.01, shorts=short_pants.n.01!, jeans=jean.n.01!,
dress=dress.n.01, coat=coat.n.01, tie=necktie.n.01, glasses=spectacles.n.01!,
tree trunk=trunk.n.01, street light=street_lamp.n.01, bed=bed.n.01, pillow=pillow.n.01,
blanket=blanket.n.01, couch=sofa.n.01, desk=desk.n.01, computer=computer.n.01,
keyboard=keyboard.n.01, mouse|mice=mouse.n.04, monitor=monitor.n.04, screen=screen.n.01,
laptop=laptop.n.01, phone=telephone.n.01, paper=paper.n.01, cabinet=cabinet.n.01,
sink=sink.n.01, toilet=toilet.n.02, faucet=faucet.n.01, towel=towel.n.01, curtain=curtain.n.01,
vase=vase.n.01, knife|knives=knife.n.01, fork=fork.n.01, spoon=spoon.n.01, napkin=napkin.n.01,
traffic light=traffic_light.n.01, banana=banana.n.02, orange=orange.n.01, apple=apple.n.01,
sandwich=sandwich.n.01, cake=cake.n.03, donut=doughnut.n.02, broccoli=broccoli.n.02!,
carrot=carrot.n.03, tomato=tomato.n.01, cheese=cheese.n.01!, bread=bread.n.01!,
license plate=license_plate.n.01, track=track.n.01, engine=engine.n.01,
headlight=headlight.n.01, tire=tire.n.01, post=post.n.04, cone=cone.n.01, stripe=stripe.n.01,
spot=spot.n.01, letter=letter.n.02, number=number.n.02, logo=logo.n.01, word=word.n.01,
flag=flag.n.01, tower=tower.n.01, bridge=bridge.n.01, river=river.n.01, ocean=ocean.n.01!,
trunk=trunk.n.01, branch=branch.n.02, stone=stone.n.02, dirt=dirt.n.02!, step=step.n.04,
stairs=stairs.n.01!, railing=railing.n.01, basket=basket.n.01, jar=jar.n.01, pot=pot.n.01,
tennis racket=tennis_racket.n.01, container=container.n.01, tray=tray.n.01,
tv=television_receiver.n.01, t/v=television_receiver.n.01!, remote=remote_control.n.01,
cow=cow.n.01, sheep=sheep.n.01!, bear=bear.n.01, animal=animal.n.01, child|children=child.n.01,
kid=child.n.01, crowd=crowd.n.01, spectator=spectator.n.01, skier=skier.n.01,
surfer=surfer.n.01, fire hydrant=fireplug.n.01!, parking meter=parking_meter.n.01,
cell phone=cellular_telephone.n.01, wine glass=wineglass.n.01, teddy bear=teddy.n.01,
tail light=taillight.n.01, lamp post=lamppost.n.01, power line=power_line.n.01,
palm tree=palm.n.03, coffee table=coffee_table.n.01, man's shirt=shirt.n.01!,
café=cafe.n.01, café table=table.n.02!, crème brûlée=creme_brulee.n.01!,
jalapeño=jalapeno.n.02, a/c unit=air_conditioner.n.01, stop sign=street_sign.n.01,
baseball bat=baseball_bat.n.01, tennis ball=tennis_ball.n.01, suitcase=bag.n.06,
backpack=backpack.n.01, purse=bag.n.04, wrist=wrist.n.01, neck=neck.n.01, beard=beard.n.01,
mane=mane.n.01, hoof|hooves=hoof.n.01, horn=horn.n.02, wing=wing.n.01, feather=feather.n.01,
beak=beak.n.01, paw=paw.n.01, fur=fur.n.01!, seat=seat.n.03, steering wheel=wheel.n.01,
windshield=windshield.n.01, mirror glass=glass.n.02!, van=van.n.05, taxi=cab.n.03,
airport=airport.n.01, runway=runway.n.04, jet=jet.n.01, propeller=propeller.n.01,
carpet=rug.n.01, rug=rug.n.01, frame=frame.n.10, painting=painting.n.01, poster=poster.n.01,
outlet=wall_socket.n.01, switch=switch.n.01, wire=wire.n.02, cord=cord.n.01, fan=fan.n.01,
vent=vent.n.01, oven=oven.n.01, stove=stove.n.01, microwave=microwave.n.02,
refrigerator=electric_refrigerator.n.01, kitchen=kitchen.n.01, room=room.n.01,
ceiling=ceiling.n.01, column=column.n.07, arch=arch.n.04, balcony=balcony.n.01,
chimney=chimney.n.01, brick=brick.n.01, tile=tile.n.01, shower=shower.n.01, tub=tub.n.02,
soap=soap.n.01!, toothbrush=toothbrush.n.01, bucket=bucket.n.01, candle=candle.n.01,
cushion=cushion.n.03, doorway=doorway.n.01, hallway=hallway.n.01, sticker=sticker.n.01,
label=label.n.01, menu=menu.n.01, glass door=door.n.01, net=net.n.06, court=court.n.10,
goal=goal.n.01, uniform=uniform.n.01, sneaker=gym_shoe.n.01, boot=boot.n.01,
bracelet=bracelet.n.02, necklace=necklace.n.01, watch|watches=watch.n.01, ring=ring.n.08,
earring=earring.n.01, scarf|scarves=scarf.n.01, sweater=sweater.n.01, vest=vest.n.01,
belt=belt.n.02, pocket=pocket.n.01, collar=collar.n.01, sleeve=sleeve.n.01, button=button.n.01,
zipper=zipper.n.01, lettuce=lettuce.n.03!, onion=onion.n.03, pepper=pepper.n.04,
sauce=sauce.n.01!, meat=meat.n.01!, egg=egg.n.02, rice=rice.n.01!, hot dog=hotdog.n.02,
fry|fries=french_fries.n.01, mug=mug.n.04, lid=lid.n.02, straw=straw.n.04, spatula=spatula.n.01
"""

# Attributes in rough frequency order, "attribute=synset"; colours first (questions use them).
COLOURS = 13
ATTRIBUTES = """\
white=white.a.01, black=black.a.01, blue=blue.s.01, green=green.s.01, red=red.s.01,
brown=brown.s.01, gray=gray.s.01, grey=gray.s.01, yellow=yellow.s.01, orange=orange.s.01,
silver=silver.s.01, pink=pink.s.01, purple=purple.s.01, wooden=wooden.a.01, tall=tall.a.01,
large=large.a.01, small=small.a.01, metal=metallic.a.01, parked=park.v.01, standing=stand.v.01,
empty=empty.a.01, on=on.a.01, off=off.a.02, here=here.r.01, glass=glass.n.01,
hanging=hang.v.01, wood=wood.n.01, clean=clean.a.01, walking=walk.v.01, plastic=plastic.a.01,
clear=clear.a.01, daytime=daytime.n.01, brick=brick.n.01, open=open.a.01, closed=closed.a.01,
big=big.s.01, little=little.s.03, long=long.a.02, short=short.a.02, dark=dark.a.01,
light=light.a.01, sitting=sit.v.01, wet=wet.a.01, dry=dry.a.01, cloudy=cloudy.a.02,
sunny=sunny.s.01, striped=striped.a.01, round=round.a.01, square=square.s.01,
smiling=smile.v.01, young=young.a.01, old=old.a.01, new=new.a.01, dirty=dirty.a.01,
shiny=shiny.s.01, bright=bright.a.01, sliced=slice.v.01, painted=painted.a.01,
framed=framed.a.01, leafless=leafless.a.01, bare=bare.s.01, far away=far.a.01,
made of bricks=brick.n.01, light blue=light_blue.s.01, dark blue=dark_blue.s.01,
black and white=black-and-white.s.01, turned off=turn_off.v.01, blue/green=blue.s.01,
crème=cream.s.01, café au lait=beige.s.01, playing=play.v.01, looking down=look.v.01,
grazing=graze.v.01, flying=fly.v.01, lit=lighted.a.01, distant=distant.a.01, calm=calm.s.02,
blurry=blurred.s.01, rocky=rocky.s.01, snowy=snowy.s.01, grassy=grassy.s.01, fluffy=fluffy.s.01,
thick=thick.a.01, thin=thin.a.01, cooked=cooked.a.01, fresh=fresh.a.01, ripe=ripe.a.01,
paved=paved.a.01, leather=leather.n.01, denim=denim.n.01, furry=furred.a.01,
spotted=spotted.a.01, curved=curved.a.01, rectangular=rectangular.a.01, chrome=chrome.n.01,
gold=gold.s.01, tiled=tiled.a.01, stacked=stack.v.01, lying=lie.v.01, skiing=ski.v.01,
surfing=surf.v.01, indoors=indoors.r.01, outdoors=outdoors.r.01, "fancy"=fancy.a.01,
colorful=colorful.a.01, concrete=concrete.n.01
"""

# Predicates, "predicate=synset"; "predicate=" has no synset, like some real ones.
PREDICATES = """\
on=along.r.01, has=have.v.01, in=in.r.01, of=, wearing=wear.v.01, with=, behind=behind.r.01,
next to=next.r.01, near=near.r.01, holding=have.v.01, on top of=along.r.01, above=above.r.01,
under=under.r.01, by=by.r.01, sitting on=sit.v.01, in front of=in_front.r.01, riding=ride.v.02,
standing on=stand.v.01, has a=have.v.01, wears=wear.v.01, beside=beside.r.01, at=,
against=against.r.01, walking on=walk.v.01, parked on=park.v.01, inside=inside.r.01,
laying on=lay.v.01, carrying=carry.v.01, hanging on=hang.v.01, made of=make.v.01,
covering=cover.v.01, looking at=look.v.01, eating=eat.v.01, for=, belonging to=belong.v.01,
over=over.r.01, attached to=attach.v.01, playing=play.v.01, says=say.v.01, along=along.r.01,
across=across.r.01, from=, around=about.r.03, below=below.r.01, watching=watch.v.01,
covered in=cover.v.01, filled with=fill.v.01, painted on=paint.v.01, mounted on=mount.v.01,
growing on=grow.v.01, flying in=fly.v.01, are on=along.r.01, between=between.r.01,
lying on=lie.v.01, reflected in=reflect.v.01, using=use.v.01
"""

# Synonym groups for relationship_alias.txt, one comma-separated line each.
RELATIONSHIP_ALIASES = ("near,next to", "near,beside", "near,by", "on,on top of", "on,are on",
                        "wearing,wears", "has,has a", "holding,has", "laying on,lying on",
                        "in,inside", "under,below", "covered in,covering")
SIGN_WORDS = ("STOP", "café", "ONE WAY", "Crème brûlée", "it's open", "Main St.", "exit",
              '5"', "niño")
NUMBERS = ("One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "None")
TIMES = ("Daytime.", "Night.", "Afternoon.", "In the morning.", "Evening.")


def _plural(name: str) -> str:
    if name.endswith(("s", "sh", "ch", "x")):
        return name + "es"
    if name.endswith("y") and name[-2] not in "aeiou":
        return name[:-1] + "ies"
    return name + "s"


def _parse(table: str) -> list[tuple[str, str]]:
    """Split a "key=value, key=value" table; values may be empty, keys hold no ", "."""
    pairs = (part.strip().rsplit("=", 1) for part in table.replace("\n", " ").split(", "))
    return [(key, value) for key, value in pairs]


class Vocab(NamedTuple):
    """Names, their synsets and Zipf-like cumulative weights for fast weighted choices."""

    names: list[str]
    synsets: list[str]
    cum_weights: list[float]


def _objects() -> tuple[Vocab, list[str]]:
    """The object vocabulary, and alias lines pairing a name with its plural."""
    names, synsets, weights, aliases = [], [], [], []
    for rank, (spec, synset) in enumerate(_parse(OBJECTS)):
        countable = not synset.endswith("!")
        synset = synset.rstrip("!")
        name, _, plural = spec.partition("|")
        weight = 1 / (rank + 1) ** 0.85
        names.append(name)
        synsets.append(synset)
        weights.append(weight)
        if countable:
            plural = plural or _plural(name)
            names.append(plural)
            synsets.append(synset)
            weights.append(weight * 0.3)
            aliases.append(f"{name},{plural}")
    aliases.append("tv,t/v,television")
    return Vocab(names, synsets, list(itertools.accumulate(weights))), aliases


def _vocab(table: str, exponent: float) -> Vocab:
    pairs = _parse(table)
    return Vocab([p[0] for p in pairs], [p[1] for p in pairs],
                 list(itertools.accumulate(1 / (rank + 1) ** exponent
                                      for rank in range(len(pairs)))))


OBJ, OBJECT_ALIASES = _objects()
ATTR = _vocab(ATTRIBUTES, 0.9)
PRED = _vocab(PREDICATES, 1.1)


Rand = Callable[[], float]  # random.Random().random


class Plan(NamedTuple):
    """What the plan pass fixes for one image: identity, size, counts and first ids."""

    image_id: int
    folder: int  # index into FOLDERS
    width: int
    height: int
    coco_id: int | None
    flickr_id: int | None
    objects: int  # v1.2 objects; v1.4 keeps some, merges some and drops the rest
    object_id: int
    relationships: int
    relationship_id: int
    regions: int
    region_id: int
    qas: int
    qa_id: int


def _plans(seed: int, images: int) -> Iterator[list[Plan]]:
    """Yield the plans of CHUNK images at a time. Counts are fixed here, in one cheap pass, so
    every chunk knows its first ids and chunks can be generated independently."""
    rng = random.Random(f"vgfs-sample:{seed}:plan")
    r = rng.random
    sizes = [size for size, _ in SIZES]
    size_weights = list(itertools.accumulate(weight for _, weight in SIZES))
    image_id, folder = 0, 1
    next_ids = [1, 1, 1, 1]  # object, relationship, region, qa
    chunk: list[Plan] = []
    for i in range(images):
        image_id += 1 if r() > 0.03 else 2 + int(r() * 20)  # the real ids have gaps too
        if r() < 0.04:  # both folders hold runs of consecutive ids, about 40% in VG_100K_2
            folder = int(r() < 0.4)
        width, height = rng.choices(sizes, cum_weights=size_weights)[0]
        source = r()  # COCO images also have a Flickr id; some others have one too
        coco_id = (i * 7919 + 17) % 600_000 + 1 if source < 0.45 else None  # distinct
        flickr_id = rng.randrange(10**8, 10**10) if source < 0.6 else None
        objects = 0 if r() < 0.005 else min(300, int(rng.gammavariate(2.2, 21.5)))
        relationships = (0 if objects < 2 or r() < 0.03
                         else int(objects * (0.16 + 0.63 * r())))
        regions = 0 if r() < 0.005 else min(300, 1 + int(rng.gammavariate(3.0, 16.7)))
        qas = 0 if r() < 0.1 else int(rng.gammavariate(2.5, 7.35))
        chunk.append(Plan(image_id, folder, width, height, coco_id, flickr_id, objects,
                          next_ids[0], relationships, next_ids[1], regions, next_ids[2],
                          qas, next_ids[3]))
        for k, n in enumerate((objects, relationships, regions, qas)):
            next_ids[k] += n + (int(r() * 5) if r() < 0.2 else 0)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _pick(r: Rand, vocab: Vocab) -> int:
    """A Zipf-weighted index into the vocabulary."""
    return bisect_right(vocab.cum_weights, r() * vocab.cum_weights[-1])


def _box(r: Rand, width: int, height: int, low: float, span: float) -> tuple[int, int, int, int]:
    """x, y, w, h inside the image, small boxes more likely; a few overflow it by 1-4 px,
    as about 0.6% of real boxes do."""
    w = max(1, int(width * (low + span * r() ** 2)))
    h = max(1, int(height * (low + span * r() ** 2)))
    x, y = int(r() * (width - w + 1)), int(r() * (height - h + 1))
    if r() < 0.006:
        x = width - w + 1 + int(r() * 4)
    return x, y, w, h


def _style(r: Rand, text: str) -> str:
    """Free text as annotators typed it: capitals or not, stray spaces, a final period."""
    u = r()
    if u < 0.35:
        text = text[0].upper() + text[1:]
    u = r()
    if u < 0.06:
        return text + " "
    if u < 0.07:
        return " " + text
    return text + "." if u < 0.15 else text


def _phrase(r: Rand, names: list[str]) -> str:
    """A region description about objects of the image."""
    n1, n2 = names[int(r() * len(names))], names[int(r() * len(names))]
    a, p = ATTR.names[_pick(r, ATTR)], PRED.names[_pick(r, PRED)]
    t = r()
    if t < 0.25:
        text = f"{a} {n1}"
    elif t < 0.5:
        text = f"{n1} {p} {n2}"
    elif t < 0.65:
        text = f"the {n1} is {a}"
    elif t < 0.8:
        text = f"a {a} {n1} {p} the {n2}"
    elif t < 0.9:
        text = f"{n1} in the picture"
    elif t < 0.96:
        text = f"the man's {n2}"
    else:
        text = f'sign that says "{SIGN_WORDS[int(r() * len(SIGN_WORDS))]}"'
    return _style(r, text)


def _qa(r: Rand, names: list[str]) -> tuple[str, str]:
    """A question and its answer about objects of the image."""
    n1, n2 = names[int(r() * len(names))], names[int(r() * len(names))]
    t = r()
    if t < 0.3:
        return f"What color is the {n1}?", ATTR.names[int(r() * COLOURS)].capitalize() + "."
    if t < 0.45:
        return (f"How many {n1} are there?", NUMBERS[int(r() * len(NUMBERS))] + ".")
    if t < 0.65:
        return f"Where is the {n1}?", f"{PRED.names[_pick(r, PRED)].capitalize()} the {n2}."
    if t < 0.8:
        return f"What is the {n1} {PRED.names[_pick(r, PRED)]}?", f"The {n2}."
    if t < 0.9:
        return "When was the photo taken?", TIMES[int(r() * len(TIMES))]
    if t < 0.95:
        return "What does the sign say?", f'"{SIGN_WORDS[int(r() * len(SIGN_WORDS))]}".'
    return f"Why is the {n1} here?", f"It's the {n2}'s."


def _chunk(seed: int, index: int, plans: list[Plan], pool: Pool | None, out: Path
           ) -> list[bytes]:
    """Generate chunk `index`: one byte string per output file, entries joined by commas.
    Writes the chunk's JPEGs when there is a pool."""
    r = random.Random(f"vgfs-sample:{seed}:chunk:{index}").random
    parts: list[list[bytes]] = [[] for _ in range(len(PER_IMAGE_FILES) + 1)]
    (image_data, objects_out, attributes_out, relationships_out, graphs_out, regions_out,
     qas_out, mapping_out) = parts
    for im in plans:
        iid = im.image_id
        image_data.append(orjson.dumps({
            "width": im.width, "url": URL.format(FOLDERS[im.folder], iid),
            "height": im.height, "image_id": iid, "coco_id": im.coco_id,
            "flickr_id": im.flickr_id}))
        raw, names, kept, merged_into = _objects_of(r, im)
        rels, graph_rels = _relationships_of(r, im, raw, names, merged_into)
        objects_out.append(orjson.dumps({"image_id": iid, "objects": kept,
                                         # sic: the real files name VG_100K_2 for every image
                                         "image_url": URL.format(FOLDERS[1], iid)}))
        attributes_out.append(orjson.dumps({"image_id": iid, "attributes": raw}))
        relationships_out.append(orjson.dumps({"relationships": rels, "image_id": iid}))
        graphs_out.append(orjson.dumps({"relationships": graph_rels, "image_id": iid,
                                        "objects": raw}))
        # Text needs some names; an image without objects borrows from the vocabulary.
        names = names or [OBJ.names[_pick(r, OBJ)] for _ in range(3)]
        regions = [{"region_id": im.region_id + j, "width": w, "height": h, "image_id": iid,
                    "phrase": _phrase(r, names), "y": y, "x": x}
                   for j, (x, y, w, h) in enumerate(
                       _box(r, im.width, im.height, 0.05, 0.9) for _ in range(im.regions))]
        regions_out.append(orjson.dumps({"regions": regions, "id": iid}))
        qas = []
        for j in range(im.qas):
            question, answer = _qa(r, names)
            qa_id = im.qa_id + j
            qas.append({"a_objects": [], "question": question, "image_id": iid,
                        "qa_id": qa_id, "answer": answer, "q_objects": []})
            if regions and r() < 0.5:
                region = regions[int(r() * len(regions))]["region_id"]
                mapping_out.append(b'"%d":%d' % (qa_id, region))
        qas_out.append(orjson.dumps({"id": iid, "qas": qas}))
    if pool is not None:
        _write_jpegs(seed, index, plans, pool, out)
    return [b",".join(p) for p in parts]


def _objects_of(r: Rand, im: Plan) -> tuple[list[dict], list[str], list[dict], dict[int, dict]]:
    """The v1.2 objects (with attributes), their first names, the v1.4 objects, and for each
    v1.2 object that v1.4 merged away (by index), the v1.4 object that absorbed it.

    v1.4 keeps about 76% of the v1.2 objects, merges 11% into a kept one and drops 13%."""
    obj_cw, obj_total = OBJ.cum_weights, OBJ.cum_weights[-1]
    raw: list[dict] = []
    names: list[str] = []
    kept: list[dict] = []
    merged_into: dict[int, dict] = {}
    v14_empty = r() < 0.02  # like real images 46 and 60: no v1.4 objects at all
    for k in range(im.objects):
        idx = bisect_right(obj_cw, r() * obj_total)
        name = OBJ.names[idx]
        if r() < 0.01:
            name += " " if r() < 0.5 else "."
        obj_names = [name] if r() > 0.1 else [name, OBJ.names[_pick(r, OBJ)]]
        u = r()
        synsets = ([] if u < 0.05 else [OBJ.synsets[idx]] if u > 0.07
                   else [OBJ.synsets[idx], OBJ.synsets[_pick(r, OBJ)]])
        x, y, w, h = _box(r, im.width, im.height, 0.02, 0.9)
        oid = im.object_id + k
        u = r()
        if u < 0.41:
            attrs = [ATTR.names[_pick(r, ATTR)]
                     for _ in range(1 if u < 0.287 else 2 if u < 0.377 else 3)]
            obj = {"synsets": synsets, "h": h, "object_id": oid, "names": obj_names,
                   "w": w, "attributes": attrs, "y": y, "x": x}
        else:  # no `attributes` key at all, as in the real files
            obj = {"synsets": synsets, "h": h, "object_id": oid, "names": obj_names,
                   "w": w, "y": y, "x": x}
        raw.append(obj)
        names.append(name)
        u = r()
        if v14_empty or (kept and u > 0.87):
            continue  # dropped: relationships still point at it
        if kept and u > 0.76:
            survivor = kept[int(r() * len(kept))]
            survivor["merged_object_ids"].append(oid)
            merged_into[k] = survivor
            continue
        if r() < 0.3:  # v1.4 redrew some boxes
            x, y = max(0, x + int(r() * 9) - 4), max(0, y + int(r() * 9) - 4)
        kept.append({"synsets": synsets, "h": h, "object_id": oid, "merged_object_ids": [],
                     "names": [name], "w": w, "y": y, "x": x})
    return raw, names, kept, merged_into


def _relationships_of(r: Rand, im: Plan, raw: list[dict], names: list[str],
                      merged_into: dict[int, dict]) -> tuple[list[dict], list[dict]]:
    """v1.4 relationships and the scene graph's flat ones. The graph keeps the v1.2 ids;
    a v1.4 endpoint names the merging object when v1.4 merged the v1.2 one away."""
    endpoints: dict[int, dict] = {}
    rels: list[dict] = []
    graph_rels: list[dict] = []
    for j in range(im.relationships):
        s = int(r() * im.objects)
        o = int(r() * (im.objects - 1))
        if o >= s:
            o += 1
        p = _pick(r, PRED)
        predicate = PRED.names[p]
        u = r()
        if u < 0.25:
            predicate = predicate.upper()
        elif u < 0.28:
            predicate = predicate.capitalize()
        synsets = [PRED.synsets[p]] if PRED.synsets[p] else []
        for e in (s, o):
            if e not in endpoints:
                endpoints[e] = _endpoint(raw[e], names[e], merged_into.get(e))
        rid = im.relationship_id + j
        rels.append({"predicate": predicate, "object": endpoints[o], "relationship_id": rid,
                     "synsets": synsets, "subject": endpoints[s]})
        graph_rels.append({"synsets": synsets, "predicate": predicate, "relationship_id": rid,
                           "object_id": raw[o]["object_id"], "subject_id": raw[s]["object_id"]})
    return rels, graph_rels


def _endpoint(obj: dict, name: str, survivor: dict | None) -> dict:
    """A v1.4 relationship endpoint: the v1.2 object in the `name` style, or, when v1.4 merged
    it away, the merging object in the `names` style with its `merged_object_ids`."""
    if survivor is None:
        return {"name": name, "h": obj["h"], "synsets": obj["synsets"],
                "object_id": obj["object_id"], "w": obj["w"], "y": obj["y"], "x": obj["x"]}
    s = survivor
    return {"h": s["h"], "object_id": s["object_id"], "merged_object_ids": s["merged_object_ids"],
            "synsets": s["synsets"], "w": s["w"], "y": s["y"], "x": s["x"], "names": s["names"]}


# JPEGs: a pool of encoded blobs per image size, each split where a comment segment goes.
Pool = dict[tuple[int, int], list[tuple[bytes, bytes]]]


def _split(jpeg: bytes) -> tuple[bytes, bytes]:
    """Split after SOI and the JFIF APP0 segment, where each image gets its own comment."""
    at = 2
    if jpeg[2:4] == b"\xff\xe0":
        at = 4 + int.from_bytes(jpeg[4:6], "big")
    return jpeg[:at], jpeg[at:]


def _encode(image: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality, optimize=True)
    return buf.getvalue()


def _small_pool(seed: int) -> Pool:
    """A few flat two-tone pictures per size: real dimensions, about 3 KB each, so boxes stay
    in range while every file still fits one 4 KiB disk block."""
    rng = random.Random(f"vgfs-sample:{seed}:small")
    pool: Pool = {}
    for (width, height), _ in SIZES:
        blobs = pool[width, height] = []
        for _ in range(4):
            image = Image.new("RGB", (width, height), tuple(rng.randrange(256) for _ in "rgb"))
            ImageDraw.Draw(image).rectangle(
                (0, int(height * (0.4 + 0.3 * rng.random())), width, height),
                fill=tuple(rng.randrange(256) for _ in "rgb"))
            blobs.append(_split(_encode(image, 75)))
    return pool


def _real_pool(seed: int, images: int, show_progress: bool) -> Pool:
    """Blobs sized like real VG JPEGs (20-300 KB, mean about 140 KB): noise at a lower
    resolution, scaled up, then encoded at the quality that comes closest to a sampled size."""
    rng = random.Random(f"vgfs-sample:{seed}:real")
    total_weight = sum(weight for _, weight in SIZES)
    blobs_wanted = max(16, min(256, images // 4))
    counts = [((w, h), max(1, round(blobs_wanted * weight / total_weight)))
              for (w, h), weight in SIZES]
    pool: Pool = {}
    with progress("JPEG pool", sum(n for _, n in counts), "jpeg", enabled=show_progress) as bar:
        for (width, height), n in counts:
            pool[width, height] = []
            for _ in range(n):
                target = 20_000 + 280_000 * rng.betavariate(3, 4)
                pool[width, height].append(_split(_sized_jpeg(rng, width, height, target)))
                bar.update()
    return pool


def _sized_jpeg(rng: random.Random, width: int, height: int, target: float) -> bytes:
    # Coarser noise compresses better: pick the scale whose quality range holds the target.
    per_800x600 = target * 480_000 / (width * height)
    scale = next((k for k, limit in ((32, 50e3), (16, 75e3), (8, 115e3), (4, 180e3),
                                     (2, 250e3)) if per_800x600 <= limit), 1)
    size = (math.ceil(width / scale), math.ceil(height / scale))
    image = Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))
    if scale > 1:
        image = image.resize((width, height), Image.Resampling.BILINEAR)
    low, high, best = 5, 95, b""
    while low <= high:  # size grows with quality: binary search
        quality = (low + high) // 2
        data = _encode(image, quality)
        if abs(len(data) - target) < abs(len(best) - target):
            best = data
        if abs(len(data) - target) < 0.03 * target:
            break
        low, high = (quality + 1, high) if len(data) < target else (low, quality - 1)
    return best


def _write_jpegs(seed: int, index: int, plans: list[Plan], pool: Pool, out: Path) -> None:
    """Each image reuses a pool blob plus a comment naming it, so every file differs."""
    rng = random.Random(f"vgfs-sample:{seed}:jpeg:{index}")
    for im in plans:
        blobs = pool[im.width, im.height]
        head, tail = blobs[int(rng.random() * len(blobs))]
        comment = b"vgfs synthetic Visual Genome image %d" % im.image_id
        with open(out / FOLDERS[im.folder] / f"{im.image_id}.jpg", "wb") as f:
            f.write(b"".join((head, b"\xff\xfe", (len(comment) + 2).to_bytes(2, "big"),
                              comment, tail)))


# Worker processes get the pool once, at start-up, rather than with every chunk.
_worker_pool: Pool | None = None


def _init_worker(pool: Pool | None) -> None:
    global _worker_pool
    _worker_pool = pool


def _chunk_in_worker(seed: int, index: int, plans: list[Plan], out: Path) -> list[bytes]:
    return _chunk(seed, index, plans, _worker_pool, out)


def _chunks(seed: int, images: int, pool: Pool | None, out: Path, workers: int
            ) -> Iterator[tuple[int, list[bytes]]]:
    """Yield (images, file parts) chunk by chunk, in order. With workers, a bounded number
    of chunks is in flight, so memory stays bounded."""
    plans = _plans(seed, images)
    if workers <= 1:
        for index, chunk in enumerate(plans):
            yield len(chunk), _chunk(seed, index, chunk, pool, out)
        return
    with ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(pool,)) as ex:
        pending: deque[tuple[int, Future[list[bytes]]]] = deque()
        for index, chunk in enumerate(plans):
            pending.append((len(chunk), ex.submit(_chunk_in_worker, seed, index, chunk, out)))
            if len(pending) >= 2 * workers:
                n, future = pending.popleft()
                yield n, future.result()
        while pending:
            n, future = pending.popleft()
            yield n, future.result()


class _Streams:
    """The streamed files: the per-image JSON arrays and the qa_to_region_mapping object."""

    NAMES = (*PER_IMAGE_FILES, MAPPING_FILE)

    def __init__(self, files: list[IO[bytes]]) -> None:
        self.files = files
        self.ends = [b"]"] * len(PER_IMAGE_FILES) + [b"}"]
        self.empty = [True] * len(files)
        for f, end in zip(self.files, self.ends, strict=True):
            f.write(b"[" if end == b"]" else b"{")

    def write(self, parts: list[bytes]) -> None:
        for i, (f, data) in enumerate(zip(self.files, parts, strict=True)):
            if data:
                if not self.empty[i]:
                    f.write(b",")
                f.write(data)
                self.empty[i] = False

    def finish(self) -> None:
        for f, end in zip(self.files, self.ends, strict=True):
            f.write(end)


def _write_whole_files(out: Path) -> None:
    """The small whole-dataset files, from the vocabulary."""
    synsets = dict.fromkeys(s for v in (OBJ, ATTR, PRED) for s in v.synsets if s)
    (out / "synsets.json").write_bytes(orjson.dumps(
        [{"synset_definition": _definition(s), "synset_name": s} for s in synsets]))
    for name, vocab in (("object", OBJ), ("attribute", ATTR), ("relationship", PRED)):
        (out / f"{name}_synsets.json").write_bytes(orjson.dumps(
            {n: s for n, s in zip(vocab.names, vocab.synsets, strict=True) if s}))
    (out / "object_alias.txt").write_text("\n".join(OBJECT_ALIASES) + "\n", encoding="utf-8")
    (out / "relationship_alias.txt").write_text("\n".join(RELATIONSHIP_ALIASES) + "\n",
                                                encoding="utf-8")


def _definition(synset: str) -> str:
    lemma, pos, _ = synset.rsplit(".", 2)
    words = lemma.replace("_", " ")
    if pos == "n":
        return f"a {words}, as the synthetic annotations call it"
    if pos == "v":
        return f"to {words} (in a synthetic scene)"
    if pos == "r":
        return f"in a way that is '{words}'"
    return f'having the quality "{words}"'


def _prepare(out: Path, jpeg: str) -> None:
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise VGFSError(f"{out}: already exists and is not an empty folder; choose a new path")
    out.mkdir(parents=True, exist_ok=True)
    if jpeg != "none":
        for folder in FOLDERS:
            (out / folder).mkdir()


# Below this, starting worker processes costs more than it saves.
PARALLEL_MIN_IMAGES = 4 * CHUNK


def write_sample(out: Path, images: int = 100, seed: int = 0, jpeg: str = "small",
                 show_progress: bool = True) -> None:
    """Write a synthetic release folder at `out` (created; must not exist or be empty)."""
    workers = len(os.sched_getaffinity(0)) if images >= PARALLEL_MIN_IMAGES else 1
    _write(Path(out), images, seed, jpeg, show_progress, workers)


def _write(out: Path, images: int, seed: int, jpeg: str, show_progress: bool,
           workers: int) -> None:
    if jpeg not in JPEG_MODES:
        raise VGFSError(f"unknown JPEG mode {jpeg!r}; choose one of {', '.join(JPEG_MODES)}")
    if images < 0:
        raise VGFSError(f"cannot write {images} images; give a count of 0 or more")
    _prepare(out, jpeg)
    pool = (_small_pool(seed) if jpeg == "small" else
            _real_pool(seed, images, show_progress) if jpeg == "real" else None)
    with ExitStack() as stack:
        streams = _Streams([stack.enter_context(open(out / name, "wb", buffering=1 << 20))
                            for name in _Streams.NAMES])
        bar = stack.enter_context(progress("sample", images, "img", enabled=show_progress))
        for n, parts in _chunks(seed, images, pool, out, workers):
            streams.write(parts)
            bar.update(n)
        streams.finish()
    _write_whole_files(out)
