"""Demo data: three authors, their stories and some community posts.

Run ``python -m fictures.demo`` from the repository root after ``reflex db migrate``
(``scripts/dev.py run`` does both). Everything goes through the domain functions,
so each change records its event in the outbox exactly like a real one; the app
relays them to Redis when it starts. Does nothing if the database has any user.
"""

from __future__ import annotations

import logging
import sys

from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlmodel import select

from fictures import auth, db, posts, stories
from fictures.models import (
    Credentials,
    PostCreate,
    PostType,
    StoryCreate,
    StoryStatus,
    User,
)
from fictures.settings import settings

logger = logging.getLogger("fictures.demo")

PASSWORD = "demo-password"
AUTHORS = ("ada", "basil", "cleo")

# (author, title, genre, summary, content)
STORIES: tuple[tuple[str, str, str, str, str], ...] = (
    (
        "ada",
        "The Lighthouse Keeper's Ledger",
        "mystery",
        "A ledger of passing ships lists one vessel that never sailed.",
        (
            "Every ship that passed Carrow Point went into the ledger: name, flag, hour.\n\n"
            "Mara had kept it for eleven years without a blot. So when she found the "
            "entry for the Ardent Grey, written in her own hand on a night she had "
            "spent in bed with fever, she closed the book and sat very still while "
            "the lamp turned above her."
        ),
    ),
    (
        "ada",
        "Salt and Copper",
        "fantasy",
        "A coin-minter's apprentice learns that every coin remembers who spent it.",
        (
            'The first coin spoke on a Tuesday. It said, quite clearly, "Not the baker '
            'again," and Tomas dropped it into the quench bucket in fright.\n\n'
            "Master Iveth only laughed. \"They all talk, once they've been spent enough. "
            'The trick is knowing which ones are lying."'
        ),
    ),
    (
        "basil",
        "Orbital Decay",
        "science-fiction",
        "The last crew of a failing station has ninety minutes and one seat home.",
        (
            "The station lost altitude the way old men lose their hair: slowly, then "
            "all at once.\n\n"
            "Commander Okafor read the numbers twice. Ninety-one minutes to the upper "
            "atmosphere. Four crew. One capsule, rated for one.\n\n"
            '"We draw lots," said Yun, already tearing a page from the manual.'
        ),
    ),
    (
        "basil",
        "The Night Shift at Ward Nine",
        "horror",
        "Patients on Ward Nine keep asking the new nurse who the tall visitor is.",
        (
            '"Your friend came by again," said Mrs Albright from bed four. "The tall '
            'one. He stood by your desk for ever so long."\n\n'
            "Priya checked the visitor log. It was empty, as it had been every night "
            "since she started. She checked the camera, too. Then she stopped checking."
        ),
    ),
    (
        "cleo",
        "Letters to Valparaíso",
        "romance",
        "Two strangers, one misaddressed letter, and a correspondence that outlasts a war.",
        (
            "Dear Mr. Reyes, the letter began, you do not know me, and I am afraid this "
            "letter was meant for another Reyes entirely.\n\n"
            "He wrote back anyway. It seemed rude not to."
        ),
    ),
    (
        "cleo",
        "The Cartographer's Daughter",
        "historical",
        "Lisbon, 1755: a girl who redraws her father's maps after the earthquake.",
        (
            "The maps were wrong the morning after. Whole streets had moved, or gone, "
            "or become rivers of stone. Her father sat among his ruined plates and "
            "would not speak.\n\n"
            "Inês took up his pen. Someone had to tell the city where it was."
        ),
    ),
)

DRAFT = (
    "ada",
    "Untitled Harbour Story",
    "literary",
    "Notes for something about the harbour in winter.",
    "Start with the gulls? Or with the ferry that stopped running.",
)

# (author, story title, post type, title, body)
POSTS: tuple[tuple[str, str, PostType, str, str], ...] = (
    (
        "basil",
        "The Lighthouse Keeper's Ledger",
        PostType.review,
        "That last line",
        "I read it three times. The ledger is such a good device: quiet and terrifying.",
    ),
    (
        "cleo",
        "Orbital Decay",
        PostType.question,
        "Is there a part two?",
        "I need to know who drew the short straw. Please tell me there's more coming.",
    ),
    (
        "basil",
        "Orbital Decay",
        PostType.announcement,
        "Part two is in progress",
        "Thanks for reading! The next chapter picks up at minute ninety. Soon.",
    ),
    (
        "ada",
        "Letters to Valparaíso",
        PostType.discussion,
        "Epistolary stories",
        "What are your favourite stories told in letters? This one reminded me why I love the form.",
    ),
    (
        "ada",
        "The Night Shift at Ward Nine",
        PostType.review,
        "Read it at night. Mistake.",
        "The restraint is what makes it work: nothing is ever shown, only reported.",
    ),
    (
        "cleo",
        "Salt and Copper",
        PostType.discussion,
        "Which coin is lying?",
        "My theory: the one Tomas keeps in his boot. It's far too helpful.",
    ),
)


def _story_data(spec: tuple[str, str, str, str, str], status: StoryStatus) -> StoryCreate:
    _, title, genre, summary, content = spec
    return StoryCreate(title=title, genre=genre, summary=summary, content=content, status=status)


def load() -> bool:
    """Load the demo data into an empty database. Returns whether anything was loaded."""
    with db.session() as session:
        if session.exec(select(User)).first() is not None:
            logger.info("The database already has users: demo data not loaded")
            return False

        users = {
            name: auth.register(session=session, data=Credentials(username=name, password=PASSWORD))
            for name in AUTHORS
        }
        story_ids: dict[str, int] = {}
        for spec in STORIES[:-1]:
            story = stories.create_story(
                session=session,
                author=users[spec[0]],
                data=_story_data(spec, StoryStatus.published),
            )
            story_ids[story.title] = story.id
        # The last one goes the way the writing page does it: saved as a draft, then published.
        last = STORIES[-1]
        story = stories.create_story(
            session=session,
            author=users[last[0]],
            data=_story_data(last, StoryStatus.draft),
        )
        stories.set_visibility(
            session=session,
            author=users[last[0]],
            story_id=story.id,
            status=StoryStatus.published,
        )
        story_ids[story.title] = story.id

        draft_id = stories.create_story(
            session=session,
            author=users[DRAFT[0]],
            data=_story_data(DRAFT, StoryStatus.draft),
        ).id
        for author, story_title, post_type, title, body in POSTS:
            posts.create_post(
                session=session,
                author=users[author],
                story_id=story_ids[story_title],
                data=PostCreate(title=title, body=body, type=post_type),
            )

    logger.info(
        "Loaded demo data: authors %s (password %r), %d published stories, "
        "1 draft (story %s by %s), %d posts",
        ", ".join(AUTHORS),
        PASSWORD,
        len(STORIES),
        draft_id,
        DRAFT[0],
        len(POSTS),
    )
    return True


def main() -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logger.setLevel(logging.INFO)
    if settings.env == "production":
        logger.info("FICTURES_ENV is production: demo data (with known passwords) not loaded")
        return 0
    try:
        load()
    except (OperationalError, ProgrammingError) as exc:
        logger.error("Cannot load demo data (%s). Run `reflex db migrate` first.", exc.orig)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
