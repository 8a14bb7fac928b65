"""The vocabulary of the synthetic release: object, attribute and predicate names with their
synsets and Zipf-like weights, the words of the free text, and the whole-dataset files that
list them (synsets, aliases).

Names carry the traps of the real ones: spaces, a slash, an apostrophe, non-ASCII letters,
quotes, and predicates without a synset.
"""

from __future__ import annotations

import itertools
from bisect import bisect_right
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import orjson

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

# Words the region descriptions and answers quote.
SIGN_WORDS = ("STOP", "café", "ONE WAY", "Crème brûlée", "it's open", "Main St.", "exit",
              '5"', "niño")
NUMBERS = ("One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "None")
TIMES = ("Daytime.", "Night.", "Afternoon.", "In the morning.", "Evening.")

Rand = Callable[[], float]  # random.Random().random


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


def pick(r: Rand, vocab: Vocab) -> int:
    """A Zipf-weighted index into the vocabulary."""
    return bisect_right(vocab.cum_weights, r() * vocab.cum_weights[-1])


def write_whole_files(out: Path) -> None:
    """Write the small whole-dataset files, which list the vocabulary rather than any image."""
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
