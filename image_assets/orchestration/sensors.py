"""Sensors: git tags and vendor image releases request runs of exactly the changed subtrees.

`git_tag_sensor` (contract name) lists the tags of every catalog repo with `git ls-remote`, in
parallel, and compares them with its cursor, JSON `{"repos": {repo: {tag: commit}}, "requests": N,
"since": baseline time}` (the first format, a bare `{repo: {tag: commit}}`, is read and rewritten;
an optional `"skipped": {repo: [digest]}` remembers the unusable tags already warned about):

- The first evaluation (no cursor entry for a repo) records that repo's tags as a baseline and
  requests nothing for it: tags that existed before the sensor was switched on are not news, and
  the first manual `--select '*'` build is what creates the images.
- A new or moved matching tag is a change, even one lower in version order (a hotfix tag on an
  old branch). Each changed repo selects the images that use it plus all their descendants; all
  changes of one tick give ONE run in which each image appears once.
- The run pins every input repo of every selected image in the run tag GIT_REFS_TAG at its
  NEWEST matching tag (by version order) as seen in this tick, also for a changed repo whose new
  tag is a lower version: builds always use the newest release (what a manual build would take),
  a backported hotfix must not roll images back to an old line, and the fingerprint makes such a
  run reuse the existing images when the newest commit did not change.
- The run key is a digest of the changed (repo, tag, previous commit, new commit), the cursor's
  request counter N (one more after each request) and the time of its first baseline. Evaluating
  the same tick twice starts from the same cursor and requests the same key (Dagster starts it
  once); every new change gets a new key, also a tag moved A->B->A->B, whose changes repeat (Dagster
  would skip a key any earlier run of the sensor had), and after a cursor reset.
- A tag that matches the glob but cannot be used (not ASCII, over 200 characters, not a valid ref
  name) is warned about once, with its repo and why, on the tick that first sees it.
- A repo that cannot be reached is warned about and skipped; its cursor entry stays as it was,
  so its new tags are picked up once it is back. A deleted tag is logged and builds nothing.

`vendor_image_sensor` (contract name) looks up the newest image of each vendor asset (cursor
JSON `{vendor asset: image id}`, first evaluation = baseline) and requests the vendor asset plus
its subtree when the id changed, pinning the ids it saw in the run tag VENDOR_IMAGES_TAG (the
vendor asset then materializes that id, not whatever is newest when the run starts); an
unreachable cloud is warned about and keeps the cursor.

Nothing here runs git or the cloud at import or definition time: only inside a tick.
"""

import datetime
import hashlib
import json
import re
from concurrent.futures import ThreadPoolExecutor, wait

import dagster as dg

from image_assets import gitrepos
from image_assets.orchestration.assets import GIT_REFS_TAG, VENDOR_IMAGES_TAG, lookup_vendor
from image_assets.orchestration.resources import ImageStore
from image_assets.catalog import Catalog
from image_assets.errors import StoreError

TRIGGER_TAG = "image-assets/trigger"  # readable: which repo@tag (or vendor image) started the run
# Dagster run tags are not "strict" tags (that 63-char [A-Za-z0-9_.-] rule applies to definition
# tags): any string is stored (a TEXT column), but the UI shows them in one line, so values are kept
# printable ASCII on one line and the readable tag is capped. Tag names that reach us are already
# valid git refnames (ASCII, no spaces or control characters, <= 200 chars).
TAG_VALUE_MAX = 1000
# Dagster kills a tick after 60 s; repos still listing after this budget count as unreachable.
TICK_BUDGET_SECONDS = 45.0
MAX_WORKERS = 32


def _tag_value(text: str) -> str:
    text = re.sub(r"[^\x20-\x7e]", "?", text)
    return text if len(text) <= TAG_VALUE_MAX else text[: TAG_VALUE_MAX - 15] + " ...(truncated)"


def _names(names: list[str], most: int = 10) -> str:
    names = sorted(names)
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value).encode()).hexdigest()[:32]


def _load_cursor(raw: str | None) -> dict:
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}  # an unreadable cursor is a fresh baseline, not a crash on every tick
    return value if isinstance(value, dict) else {}


def _load_git_cursor(raw: str | None) -> tuple[dict, int, str, dict]:
    """(repo -> {tag: commit}, requests so far, baseline time, repo -> digests of the skipped tags
    warned about) from either cursor format."""
    value = _load_cursor(raw)
    if isinstance(value.get("requests"), int) and isinstance(value.get("repos"), dict):
        skipped = value.get("skipped")
        return (value["repos"], value["requests"], str(value.get("since", "")),
                skipped if isinstance(skipped, dict) else {})
    # The first format, {repo: {tag: commit}}: no repo entry is an int, so it never looks like the above.
    # No cursor at all is a fresh baseline: its time keeps keys apart from runs before a cursor reset.
    since = datetime.datetime.now(datetime.timezone.utc).isoformat() if not value else ""
    return value, 0, since, {}


def subtree_selection(catalog: Catalog, roots) -> list[str]:
    """The roots plus all their descendants, each once, parents before children (catalog order within a depth)."""
    names = set()
    for root in roots:
        names.add(root)
        names.update(catalog.descendants(root))
    order = {name: i for i, name in enumerate(catalog.images)}
    return sorted(names, key=lambda n: (catalog.depth(n), order[n]))


def list_all_tags(catalog: Catalog, log, skipped: dict[str, dict[str, str]] | None = None) -> dict[str, dict[str, str]]:
    """repo -> {tag: commit} for every repo that answered; the others are warned about and left out.
    `skipped` gets repo -> {tag: why} for the tags that match the repo's glob but are not used."""
    timeout = catalog.defaults.git_timeout_seconds
    skipped = {} if skipped is None else skipped
    pool = ThreadPoolExecutor(max_workers=max(1, min(MAX_WORKERS, len(catalog.repos))))
    futures = {
        pool.submit(gitrepos.remote_tags, spec.url, spec.tags, timeout, skipped.setdefault(repo, {})): repo
        for repo, spec in catalog.repos.items()
    }
    done, _ = wait(futures, timeout=TICK_BUDGET_SECONDS)
    pool.shutdown(wait=False, cancel_futures=True)  # stragglers end on their own git timeout
    seen = {}
    for future, repo in futures.items():
        url = gitrepos.redact_url(catalog.repos[repo].url)
        if future not in done:
            log.warning(f"git_tag_sensor: repo {repo!r} ({url}) did not answer within "
                        f"{TICK_BUDGET_SECONDS:.0f}s; skipped this tick, its cursor entry is kept")
            continue
        try:
            seen[repo] = future.result()
        except (gitrepos.GitError, OSError) as exc:
            log.warning(f"git_tag_sensor: repo {repo!r} ({url}) cannot be reached: {gitrepos.redact_url(str(exc))}; "
                        "skipped this tick, its cursor entry is kept")
    return seen


def _log_skipped_tags(skipped: dict[str, dict[str, str]], seen: dict, logged: dict, log) -> dict[str, list[str]]:
    """Warn once about each tag that matches a repo's glob but is not used (not ASCII, too long,
    not a valid ref name): when it first appears. Returns the digests of the repos' skipped tags
    now, for the cursor (a reachable repo's record is replaced, an unreachable one's kept)."""
    now = {repo: digests for repo, digests in logged.items() if repo not in seen and isinstance(digests, list)}
    for repo in seen:
        known = set(logged.get(repo) or ())
        now[repo] = sorted(_digest(tag)[:16] for tag in skipped.get(repo, {}))
        for tag, why in sorted(skipped.get(repo, {}).items()):
            if _digest(tag)[:16] not in known:
                log.warning(f"git_tag_sensor: repo {repo!r}: tag {gitrepos.shown_tag(tag)} skipped: {why}; "
                            "nothing is built from it (warned once)")
    return {repo: digests for repo, digests in now.items() if digests}


def evaluate_git_tags(catalog: Catalog, cursor_text: str | None, log) -> dg.SensorResult:
    previous, requests, since, logged = _load_git_cursor(cursor_text)
    skipped: dict[str, dict[str, str]] = {}
    seen = list_all_tags(catalog, log, skipped)
    skipped_now = _log_skipped_tags(skipped, seen, {r: d for r, d in logged.items() if r in catalog.repos}, log)
    # Unreachable repos keep their entry; repos no longer in the catalog are dropped.
    cursor = {repo: tags for repo, tags in previous.items() if repo in catalog.repos and isinstance(tags, dict)}
    baseline, changes = [], []  # changes: (repo, tag, previous commit or "", new commit)
    for repo, tags in seen.items():
        old = previous.get(repo)
        cursor[repo] = tags
        if not isinstance(old, dict):
            baseline.append(repo)
            continue
        for tag in sorted(set(old) - set(tags)):
            log.info(f"git_tag_sensor: tag {tag!r} was deleted from repo {repo!r}; nothing is rebuilt for it")
        changes += [(repo, tag, old.get(tag) or "", commit)
                    for tag, commit in sorted(tags.items()) if old.get(tag) != commit]
    changes.sort()  # one order for the key and the readable tag, whatever order git answered in

    def new_cursor(count: int) -> str:
        extra = {"skipped": skipped_now} if skipped_now else {}
        return json.dumps({"repos": cursor, "requests": count, "since": since, **extra}, sort_keys=True)

    note = f"first evaluation for {_names(baseline)}: tags recorded as the baseline, nothing requested"
    if baseline:
        log.info(f"git_tag_sensor: {note}")
    if not changes:
        why = note if baseline else "no new or moved matching tag"
        return dg.SensorResult(skip_reason=dg.SkipReason(why), cursor=new_cursor(requests))

    changed_repos = sorted({repo for repo, *_ in changes})
    selection = subtree_selection(catalog, [img for repo in changed_repos for img in catalog.users_of_repo(repo)])
    # Pin every input of every selected image to the newest tag seen now (for an unreachable
    # input: the newest it had when last seen), so the run builds exactly what the sensor saw.
    refs = {}
    for repo in sorted({r for img in selection for r in catalog.input_repos(img)}):
        ref = gitrepos.newest(cursor.get(repo) or {})
        if ref is not None:  # a repo with no matching tag at all: the build itself reports it
            refs[repo] = str(ref)
    trigger = " ".join(f"{repo}@{tag}" for repo, tag, _, _ in changes)
    log.info(f"git_tag_sensor: {trigger} -> rebuild {', '.join(selection)}")
    request = dg.RunRequest(
        run_key=f"git-{_digest([since, requests, changes])}",
        asset_selection=[dg.AssetKey([name]) for name in selection],
        tags={GIT_REFS_TAG: json.dumps(refs, sort_keys=True, separators=(",", ":")),
              TRIGGER_TAG: _tag_value(trigger)},
    )
    return dg.SensorResult(run_requests=[request], cursor=new_cursor(requests + 1))


def evaluate_vendor_images(catalog: Catalog, connect, cursor_text: str | None, log) -> dg.SensorResult:
    """`connect()`: the image store (the ImageStore resource's `store`)."""
    previous = _load_cursor(cursor_text)
    cursor = {name: image for name, image in previous.items() if name in catalog.images}
    baseline, changes = [], []  # changes: (vendor asset, previous id, new id)
    for name, image in catalog.images.items():
        if not image.vendor:
            continue
        try:
            image_id = lookup_vendor(catalog, name, connect()).id
        except (StoreError, RuntimeError) as exc:
            log.warning(f"vendor_image_sensor: no lookup for {name!r}: {exc}; skipped, its cursor entry is kept")
            continue
        if name not in previous:
            baseline.append(name)
        elif previous[name] != image_id:
            changes.append((name, previous[name], image_id))
        cursor[name] = image_id
    new_cursor = json.dumps(cursor, sort_keys=True)
    if not changes:
        why = (f"first evaluation for {_names(baseline)}: image ids recorded as the baseline, nothing requested"
               if baseline else "no new vendor image")
        return dg.SensorResult(skip_reason=dg.SkipReason(why), cursor=new_cursor)
    selection = subtree_selection(catalog, [name for name, _, _ in changes])
    trigger = " ".join(f"{name}={new}" for name, _, new in changes)
    log.info(f"vendor_image_sensor: {trigger} -> rebuild {', '.join(selection)}")
    request = dg.RunRequest(
        run_key=f"vendor-{_digest(sorted(changes))}",
        asset_selection=[dg.AssetKey([name]) for name in selection],
        tags={VENDOR_IMAGES_TAG: json.dumps({name: new for name, _, new in changes}, sort_keys=True),
              TRIGGER_TAG: _tag_value(trigger)},
    )
    return dg.SensorResult(run_requests=[request], cursor=new_cursor)


def image_sensors(catalog: Catalog) -> list[dg.SensorDefinition]:
    @dg.sensor(name="git_tag_sensor", target=dg.AssetSelection.all(),
               minimum_interval_seconds=catalog.defaults.git_sensor_interval_seconds,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="New or moved git tags on catalog repos rebuild the images using them and their subtrees. "
                           "The first evaluation records a baseline and requests nothing.")
    def git_tag_sensor(context: dg.SensorEvaluationContext):
        return evaluate_git_tags(catalog, context.cursor, context.log)

    @dg.sensor(name="vendor_image_sensor", target=dg.AssetSelection.all(),
               minimum_interval_seconds=catalog.defaults.vendor_sensor_interval_seconds,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="A new vendor image rebuilds the vendor asset and its subtree. "
                           "The first evaluation records a baseline and requests nothing.")
    def vendor_image_sensor(context: dg.SensorEvaluationContext, image_store: ImageStore):
        return evaluate_vendor_images(catalog, image_store.store, context.cursor, context.log)

    return [git_tag_sensor, vendor_image_sensor]
