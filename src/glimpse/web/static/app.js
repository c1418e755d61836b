// Glimpse's pages, in place: likes, comments, follows, infinite scroll, uploads with filter
// previews, and the story viewer. Every change goes through the public API (/api/v1) with the
// session cookie and the page's CSRF token; the pages themselves are whole without this file.
// User text only ever reaches the page as textContent, never as HTML.
"use strict";

(() => {
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";

  // ---- The API -------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(method, path, body) {
    const init = { method, credentials: "same-origin", headers: { "X-CSRF-Token": csrf } };
    if (body instanceof FormData) {
      init.body = body;
    } else if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    if (response.status === 204) return null;
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (!response.ok) {
      const message = data?.error?.message || `The server answered ${response.status}.`;
      throw new ApiError(response.status, message);
    }
    return data;
  }

  const enc = encodeURIComponent;

  function el(tag, attrs = {}, children = []) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = value;
      else if (name === "class") node.className = value;
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  // ---- Blurhash placeholders (https://blurha.sh, the reference decoder's arithmetic) ----

  const B83 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~";
  const d83 = (s) => [...s].reduce((v, c) => v * 83 + B83.indexOf(c), 0);
  const toLinear = (v) => {
    const x = v / 255;
    return x <= 0.04045 ? x / 12.92 : Math.pow((x + 0.055) / 1.055, 2.4);
  };
  const toSRGB = (v) => {
    const x = Math.max(0, Math.min(1, v));
    return Math.round((x <= 0.0031308 ? x * 12.92 : 1.055 * Math.pow(x, 1 / 2.4) - 0.055) * 255);
  };
  const signPow = (v, e) => Math.sign(v) * Math.pow(Math.abs(v), e);

  function decodeBlurhash(hash, width, height) {
    if (!hash || hash.length < 6 || [...hash].some((c) => B83.indexOf(c) < 0)) return null;
    const size = d83(hash[0]);
    const ny = Math.floor(size / 9) + 1;
    const nx = (size % 9) + 1;
    if (hash.length !== 4 + 2 * nx * ny) return null;
    const maximum = (d83(hash[1]) + 1) / 166;
    const colors = [];
    const dc = d83(hash.substring(2, 6));
    colors.push([toLinear(dc >> 16), toLinear((dc >> 8) & 255), toLinear(dc & 255)]);
    for (let i = 1; i < nx * ny; i++) {
      const v = d83(hash.substring(4 + i * 2, 6 + i * 2));
      colors.push([
        signPow((Math.floor(v / 361) - 9) / 9, 2) * maximum,
        signPow((Math.floor(v / 19) % 19 - 9) / 9, 2) * maximum,
        signPow((v % 19 - 9) / 9, 2) * maximum,
      ]);
    }
    const pixels = new Uint8ClampedArray(width * height * 4);
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        let r = 0, g = 0, b = 0;
        for (let j = 0; j < ny; j++) {
          for (let i = 0; i < nx; i++) {
            const basis = Math.cos((Math.PI * x * i) / width) * Math.cos((Math.PI * y * j) / height);
            const c = colors[i + j * nx];
            r += c[0] * basis;
            g += c[1] * basis;
            b += c[2] * basis;
          }
        }
        const p = 4 * (x + y * width);
        pixels[p] = toSRGB(r);
        pixels[p + 1] = toSRGB(g);
        pixels[p + 2] = toSRGB(b);
        pixels[p + 3] = 255;
      }
    }
    return pixels;
  }

  function placeholders(root) {
    for (const node of root.querySelectorAll(".ph[data-blurhash]")) {
      const pixels = decodeBlurhash(node.dataset.blurhash, 32, 32);
      node.removeAttribute("data-blurhash");
      if (!pixels) continue;
      const canvas = document.createElement("canvas");
      canvas.width = canvas.height = 32;
      canvas.getContext("2d").putImageData(new ImageData(pixels, 32, 32), 0, 0);
      node.style.backgroundImage = `url(${canvas.toDataURL()})`;
      const img = node.querySelector("img");
      const done = () => node.classList.add("loaded");
      if (img) {
        if (img.complete && img.naturalWidth) done();
        else img.addEventListener("load", done, { once: true });
      }
    }
  }

  // ---- Posts, as the server renders them (templates/_post.html) --------------------------

  const FEED_SIZES = "(max-width: 640px) 100vw, 614px";
  const WIDTHS = ["w320", "w640", "w1080"];

  function srcset(variants, type, names) {
    const seen = new Set();
    return variants
      .filter((v) => v.content_type === type && names.includes(v.name))
      .sort((a, b) => a.width - b.width)
      .filter((v) => (seen.has(v.width) ? false : (seen.add(v.width), true)))
      .map((v) => `${v.url} ${v.width}w`)
      .join(", ");
  }

  function variantUrl(variants, name, type) {
    return variants.find((v) => v.name === name && v.content_type === type)?.url || "";
  }

  function pictureNode(media, sizes, names = WIDTHS) {
    const variants = media.variants || [];
    if (media.kind === "video") {
      const video = el("video", {
        muted: true, autoplay: true, loop: true, playsinline: true, preload: "metadata",
        poster: variantUrl(variants, "poster", "image/jpeg"),
        width: media.width, height: media.height, "aria-label": media.alt_text || "Video",
      });
      video.muted = true;
      for (const name of ["mp4_720", "mp4_480"]) {
        const url = variantUrl(variants, name, "video/mp4");
        if (url) video.append(el("source", { type: "video/mp4", src: url }));
      }
      return el("div", { class: "ph video", "data-blurhash": media.blurhash }, [video]);
    }
    const picture = el("picture", { class: "ph", "data-blurhash": media.blurhash });
    for (const type of ["image/avif", "image/webp"]) {
      const set = srcset(variants, type, names);
      if (set) picture.append(el("source", { type, srcset: set, sizes }));
    }
    picture.append(el("img", {
      src: variantUrl(variants, names[Math.floor(names.length / 2)], "image/jpeg") ||
        variantUrl(variants, names[0], "image/jpeg"),
      srcset: srcset(variants, "image/jpeg", names), sizes,
      width: media.width, height: media.height, alt: media.alt_text || "",
      loading: "lazy", decoding: "async",
    }));
    return picture;
  }

  const plural = (n, one, many) => `${n.toLocaleString("en")} ${n === 1 ? one : many}`;
  const initialOf = (user) => ((user.display_name || user.username || "?").trim()[0] || "?").toUpperCase();

  function postNode(post) {
    const author = post.author;
    const count = post.media.length;
    const track = el("div", { class: "track" }, post.media.map((m, i) =>
      el("div", { class: "slide", role: "group", "aria-label": `${i + 1} of ${count}` }, [pictureNode(m, FEED_SIZES)])));
    const carousel = el("div", { class: "carousel", "data-count": count }, [track]);
    if (count > 1) {
      carousel.append(
        el("button", { type: "button", class: "step prev", "aria-label": "Previous photo", hidden: true, text: "\u2039" }),
        el("button", { type: "button", class: "step next", "aria-label": "Next photo", text: "\u203a" }),
        el("div", { class: "dots", "aria-hidden": "true" }, post.media.map((_, i) => el("span", { class: i === 0 ? "on" : null }))),
      );
    }
    const profile = `/${enc(author.username)}`;
    const inputId = `comment-${post.id}`;
    return el("article", { class: "post", "data-post-id": post.id, "aria-label": `Post by ${author.username}` }, [
      el("header", { class: "post-head" }, [
        el("a", { class: "avatar", href: profile, "aria-hidden": "true", tabindex: "-1", text: initialOf(author) }),
        el("a", { class: "username", href: profile, text: author.username }),
      ]),
      carousel,
      el("div", { class: "post-actions" }, [
        el("button", { type: "button", class: "like", "aria-pressed": String(post.liked_by_me), text: post.liked_by_me ? "Unlike" : "Like" }),
        el("span", { class: "like-count", text: plural(post.like_count, "like", "likes") }),
      ]),
      post.caption ? el("p", { class: "caption" }, [el("a", { class: "username", href: profile, text: author.username }), ` ${post.caption}`]) : null,
      el("div", { class: "comments" }, [
        post.comment_count ? el("button", { type: "button", class: "link show-comments", text: `View ${plural(post.comment_count, "comment", "comments")}` }) : null,
        el("ul", { class: "comment-list" }),
      ]),
      el("form", { class: "comment-form" }, [
        el("label", { class: "visually-hidden", for: inputId, text: "Add a comment" }),
        el("input", { id: inputId, name: "text", placeholder: "Add a comment\u2026", maxlength: 2200, autocomplete: "off", required: true }),
      ]),
      el("time", { datetime: post.created_at, text: post.created_at.slice(0, 10) }),
    ]);
  }

  // ---- Likes, comments, carousels (delegated: posts added later work too) ---------------

  function postOf(node) {
    return node.closest("article.post");
  }

  async function toggleLike(button) {
    const post = postOf(button);
    const liked = button.getAttribute("aria-pressed") === "true";
    // Busy rather than disabled: disabling the focused button would drop a keyboard user's focus.
    if (button.getAttribute("aria-busy") === "true") return;
    button.setAttribute("aria-busy", "true");
    try {
      await api(liked ? "DELETE" : "POST", `/api/v1/posts/${post.dataset.postId}/like`);
      button.setAttribute("aria-pressed", String(!liked));
      button.textContent = liked ? "Like" : "Unlike";
      const label = post.querySelector(".like-count");
      const n = Math.max(0, parseInt(label.textContent.replace(/[^0-9]/g, ""), 10) + (liked ? -1 : 1));
      label.textContent = plural(n, "like", "likes");
    } catch (error) {
      flash(post, error.message);
    } finally {
      button.removeAttribute("aria-busy");
    }
  }

  function commentNode(comment) {
    return el("li", {}, [el("a", { class: "username", href: `/${enc(comment.author.username)}`, text: comment.author.username }), ` ${comment.text}`]);
  }

  async function showComments(button, cursor) {
    const post = postOf(button);
    button.disabled = true;
    try {
      const query = cursor ? `&cursor=${enc(cursor)}` : "";
      const page = await api("GET", `/api/v1/posts/${post.dataset.postId}/comments?limit=20${query}`);
      const list = post.querySelector(".comment-list");
      for (const comment of page.items) list.append(commentNode(comment));
      if (page.next_cursor) {
        button.textContent = "More comments";
        button.dataset.cursor = page.next_cursor;
        button.disabled = false;
      } else {
        button.remove();
      }
    } catch (error) {
      button.disabled = false;
      flash(post, error.message);
    }
  }

  async function addComment(form) {
    const post = postOf(form);
    const input = form.querySelector("input");
    const text = input.value.trim();
    if (!text) return;
    input.disabled = true;
    try {
      const comment = await api("POST", `/api/v1/posts/${post.dataset.postId}/comments`, { text });
      post.querySelector(".comment-list").append(commentNode(comment));
      input.value = "";
    } catch (error) {
      flash(post, error.message);
    } finally {
      input.disabled = false;
      input.focus();
    }
  }

  function flash(container, message) {
    let note = container.querySelector(".flash");
    if (!note) {
      note = el("p", { class: "flash error", role: "alert" });
      container.append(note);
    }
    note.textContent = message;
  }

  function stepCarousel(button) {
    const carousel = button.closest(".carousel");
    const track = carousel.querySelector(".track");
    const direction = button.classList.contains("next") ? 1 : -1;
    track.scrollBy({ left: direction * track.clientWidth, behavior: "smooth" });
  }

  function carouselMoved(track) {
    const carousel = track.closest(".carousel");
    const index = Math.round(track.scrollLeft / Math.max(1, track.clientWidth));
    const count = Number(carousel.dataset.count);
    carousel.querySelectorAll(".dots span").forEach((dot, i) => dot.classList.toggle("on", i === index));
    const prev = carousel.querySelector(".prev");
    const next = carousel.querySelector(".next");
    if (prev) prev.hidden = index <= 0;
    if (next) next.hidden = index >= count - 1;
  }

  document.addEventListener("click", (event) => {
    const target = event.target.closest("button");
    if (!target) return;
    if (target.matches("article.post .like")) toggleLike(target);
    else if (target.matches(".show-comments")) showComments(target, target.dataset.cursor);
    else if (target.matches(".carousel .step")) stepCarousel(target);
    else if (target.matches(".follow")) toggleFollow(target);
    else if (target.matches(".people .accept, .people .deny")) answerRequest(target);
    else if (target.matches(".story-ring")) openUserStories(target);
    else if (target.matches(".highlight")) openHighlight(target);
  });

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form.matches(".comment-form")) {
      event.preventDefault();
      addComment(form);
    } else if (form.matches(".story-form")) {
      event.preventDefault();
      shareStory(form);
    } else if (form.id === "new-post") {
      event.preventDefault();
      sharePost(form);
    }
  });

  document.addEventListener("scroll", (event) => {
    if (event.target instanceof Element && event.target.matches(".carousel .track")) carouselMoved(event.target);
  }, true);

  // ---- Infinite scroll: the feed, a profile's grid, follow requests -----------------------

  const GRID_SIZES = "(max-width: 640px) 33vw, 300px";

  function thumbnailNode(post) {
    const media = post.media[0];
    const label = `Post: ${media.alt_text || post.caption || "photo"}`;
    return el("li", {}, [el("a", { href: `/p/${post.id}`, "aria-label": label }, [pictureNode(media.kind === "video" ? { ...media, kind: "image" } : media, GRID_SIZES, media.kind === "video" ? ["poster"] : ["sq150", "w320"])])]);
  }

  function requesterNode(user) {
    return el("li", { "data-username": user.username }, [
      el("span", { class: "avatar", "aria-hidden": "true", text: initialOf(user) }),
      el("a", { href: `/${enc(user.username)}`, text: user.username }),
      el("span", { class: "request-buttons" }, [
        el("button", { type: "button", class: "accept", text: "Accept" }),
        el("button", { type: "button", class: "deny secondary", text: "Deny" }),
      ]),
      el("span", { class: "request-status", role: "status" }),
    ]);
  }

  const RENDERERS = { post: postNode, thumbnail: thumbnailNode, requester: requesterNode };

  function infiniteScroll() {
    const sentinel = document.querySelector(".sentinel[data-source]");
    if (!sentinel || !sentinel.dataset.nextCursor) return;
    const into = document.querySelector(sentinel.dataset.into);
    const render = RENDERERS[sentinel.dataset.render];
    const source = sentinel.dataset.source;
    const joiner = source.includes("?") ? "&" : "?";
    let loading = false;
    const observer = new IntersectionObserver(async (entries) => {
      if (loading || !entries.some((e) => e.isIntersecting)) return;
      const cursor = sentinel.dataset.nextCursor;
      if (!cursor) return observer.disconnect();
      loading = true;
      try {
        const page = await api("GET", `${source}${joiner}limit=20&cursor=${enc(cursor)}`);
        const added = page.items.map(render);
        into.append(...added);
        for (const node of added) placeholders(node);
        sentinel.dataset.nextCursor = page.next_cursor || "";
        if (!page.next_cursor) observer.disconnect();
      } catch (error) {
        flash(sentinel, error.message);
        observer.disconnect();
      } finally {
        loading = false;
      }
      // Still in view (a tall screen): ask for the next page too.
      if (sentinel.dataset.nextCursor && sentinel.getBoundingClientRect().top < innerHeight + 800) {
        observer.unobserve(sentinel);
        observer.observe(sentinel);
      }
    }, { rootMargin: "800px 0px" });
    observer.observe(sentinel);
  }

  // ---- Follows and follow requests -----------------------------------------------------

  const FOLLOW_LABELS = { none: "Follow", pending: "Requested", following: "Following" };

  async function toggleFollow(button) {
    const username = button.closest(".profile").dataset.username;
    const status = button.dataset.status;
    button.disabled = true;
    try {
      let next = "none";
      if (status === "none") next = (await api("POST", `/api/v1/users/${enc(username)}/follow`)).status;
      else await api("DELETE", `/api/v1/users/${enc(username)}/follow`);
      button.dataset.status = next;
      button.textContent = FOLLOW_LABELS[next];
      const count = document.querySelector(".follower-count");
      if (count && (next === "following" || status === "following")) {
        const n = parseInt(count.textContent.replace(/[^0-9]/g, ""), 10) + (next === "following" ? 1 : -1);
        count.textContent = Math.max(0, n).toLocaleString("en");
      }
    } catch (error) {
      flash(button.closest(".profile-info"), error.message);
    } finally {
      button.disabled = false;
    }
  }

  async function answerRequest(button) {
    const row = button.closest("li");
    const username = row.dataset.username;
    const accept = button.classList.contains("accept");
    row.querySelectorAll("button").forEach((b) => { b.disabled = true; });
    try {
      if (accept) await api("POST", `/api/v1/me/follow-requests/${enc(username)}/accept`);
      else await api("DELETE", `/api/v1/me/follow-requests/${enc(username)}`);
      row.querySelector(".request-buttons").remove();
      row.querySelector(".request-status").textContent = accept ? "Accepted" : "Denied";
    } catch (error) {
      row.querySelectorAll("button").forEach((b) => { b.disabled = false; });
      row.querySelector(".request-status").textContent = error.message;
    }
  }

  // ---- Uploads: posts with filter previews, and stories ---------------------------------

  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  // POST with upload progress (fetch has none), answered as api() answers.
  function upload(path, form, onProgress) {
    return new Promise((resolve, reject) => {
      const request = new XMLHttpRequest();
      request.open("POST", path);
      request.setRequestHeader("X-CSRF-Token", csrf);
      request.upload.addEventListener("progress", (e) => {
        if (e.lengthComputable) onProgress(Math.round((100 * e.loaded) / e.total));
      });
      request.addEventListener("load", () => {
        let data = null;
        try {
          data = JSON.parse(request.responseText);
        } catch (_) {
          data = null;
        }
        if (request.status >= 200 && request.status < 300) resolve(data);
        else reject(new ApiError(request.status, data?.error?.message || `The server answered ${request.status}.`));
      });
      request.addEventListener("error", () => reject(new ApiError(0, "The upload was interrupted; please try again.")));
      request.send(form);
    });
  }

  // Until the photos are processed: a post (or story) is `processing`, then `ready` or `failed`.
  async function untilProcessed(path, onWait) {
    for (let attempt = 0; attempt < 600; attempt++) {
      const item = await api("GET", path);
      if (item.status !== "processing") return item;
      onWait(attempt);
      await sleep(Math.min(250 + attempt * 100, 2000));
    }
    throw new ApiError(0, "Processing is taking long; your post will appear once it is done.");
  }

  let filters = [];
  let chosenFilter = "normal";

  function applyRecipe(image, recipe, width, height) {
    const data = image.data;
    const t = recipe.tables;
    const m = recipe.matrix;
    const corner = Math.hypot(31.5, 31.5);
    for (let y = 0; y < height; y++) {
      const dy = (y / Math.max(1, height - 1)) * 63 - 31.5;
      for (let x = 0; x < width; x++) {
        const p = 4 * (x + y * width);
        let r = t[data[p]], g = t[256 + data[p + 1]], b = t[512 + data[p + 2]];
        if (m) {
          const r2 = m[0] * r + m[1] * g + m[2] * b + m[3];
          const g2 = m[4] * r + m[5] * g + m[6] * b + m[7];
          const b2 = m[8] * r + m[9] * g + m[10] * b + m[11];
          // Clamped to 0..255 before the vignette, as Pillow stores the matrix's result.
          r = Math.min(255, Math.max(0, Math.round(r2)));
          g = Math.min(255, Math.max(0, Math.round(g2)));
          b = Math.min(255, Math.max(0, Math.round(b2)));
        }
        if (recipe.vignette) {
          const dx = (x / Math.max(1, width - 1)) * 63 - 31.5;
          const s = Math.max(0, Math.min(1, (Math.hypot(dx, dy) / corner - 0.45) / 0.55));
          const f = 1 - recipe.vignette * s * s * (3 - 2 * s);
          r *= f; g *= f; b *= f;
        }
        data[p] = r; data[p + 1] = g; data[p + 2] = b;
      }
    }
    return image;
  }

  async function drawFiltered(source, canvas, recipe) {
    const ctx = canvas.getContext("2d");
    ctx.drawImage(source, 0, 0, canvas.width, canvas.height);
    if (!recipe) return;
    const image = ctx.getImageData(0, 0, canvas.width, canvas.height);
    ctx.putImageData(applyRecipe(image, recipe, canvas.width, canvas.height), 0, 0);
  }

  function fitted(bitmap, longest) {
    const scale = Math.min(1, longest / Math.max(bitmap.width, bitmap.height));
    return [Math.max(1, Math.round(bitmap.width * scale)), Math.max(1, Math.round(bitmap.height * scale))];
  }

  async function newPostPage() {
    const form = document.getElementById("new-post");
    if (!form) return;
    const input = form.querySelector("#photos");
    const previews = form.querySelector(".previews");
    const fieldset = form.querySelector(".filters");
    const choices = form.querySelector(".filter-choices");
    const alts = form.querySelector(".alt-texts");
    try {
      filters = (await api("GET", "/api/v1/filters")).items;
    } catch (error) {
      form.querySelector(".upload-status").textContent = error.message;
    }
    let firstBitmap = null;

    async function redrawPreviews() {
      for (const canvas of previews.querySelectorAll("canvas")) {
        if (canvas.bitmap) await drawFiltered(canvas.bitmap, canvas, filters.find((f) => f.name === chosenFilter)?.preview);
      }
    }

    input.addEventListener("change", async () => {
      previews.replaceChildren();
      alts.replaceChildren();
      choices.replaceChildren();
      form.querySelector(".upload-status").textContent = "";
      firstBitmap = null;
      const files = [...input.files];
      for (const [i, file] of files.entries()) {
        const id = `alt-${i}`;
        alts.append(el("label", { for: id, text: `Alt text for photo ${i + 1} (${file.name})` }),
          el("input", { id, name: "alt_text", maxlength: 1000, class: "alt" }));
        if (!file.type.startsWith("image/")) {
          previews.append(el("p", { class: "file-note", text: file.name }));
          continue;
        }
        try {
          const bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
          const [w, h] = fitted(bitmap, 480);
          const canvas = el("canvas", { width: w, height: h, class: "preview", role: "img", "aria-label": `Preview of ${file.name}` });
          canvas.bitmap = bitmap;
          previews.append(canvas);
          firstBitmap = firstBitmap || bitmap;
        } catch (_) {
          previews.append(el("p", { class: "file-note", text: `${file.name}: no preview (the server will check it).` }));
        }
      }
      if (!firstBitmap || !filters.length) {
        fieldset.hidden = true;
        return;
      }
      fieldset.hidden = false;
      for (const filter of filters) {
        const [w, h] = fitted(firstBitmap, 96);
        const canvas = el("canvas", { width: w, height: h, "aria-hidden": "true" });
        await drawFiltered(firstBitmap, canvas, filter.name === "normal" ? null : filter.preview);
        const radio = el("input", { type: "radio", name: "filter", value: filter.name, checked: filter.name === chosenFilter });
        const label = el("label", { class: "filter-choice" }, [radio, canvas, el("span", { text: filter.label })]);
        radio.addEventListener("change", () => {
          chosenFilter = filter.name;
          redrawPreviews();
        });
        choices.append(label);
      }
      await redrawPreviews();
    });

    // Started here as well as on change: a browser may restore the chosen files on reload.
    if (input.files.length) input.dispatchEvent(new Event("change"));
  }

  async function sharePost(form) {
    const status = form.querySelector(".upload-status");
    const progress = form.querySelector(".upload-progress");
    const button = form.querySelector('button[type="submit"]');
    const files = [...form.querySelector("#photos").files];
    if (!files.length) {
      status.textContent = "Choose at least one photo.";
      return;
    }
    const body = new FormData();
    for (const file of files) body.append("file", file);
    const caption = form.querySelector("#caption").value;
    if (caption) body.append("caption", caption);
    if (chosenFilter !== "normal") body.append("filter", chosenFilter);
    for (const alt of form.querySelectorAll("input.alt")) body.append("alt_text", alt.value);
    button.disabled = true;
    progress.hidden = false;
    progress.value = 0;
    status.textContent = "Uploading\u2026";
    try {
      const post = await upload("/api/v1/posts", body, (percent) => {
        progress.value = percent;
        status.textContent = `Uploading\u2026 ${percent}%`;
      });
      progress.removeAttribute("value");
      status.textContent = "Processing\u2026";
      const done = await untilProcessed(`/api/v1/posts/${post.id}`, () => { status.textContent = "Processing\u2026"; });
      if (done.status === "failed") throw new ApiError(422, done.error?.message || "The photos could not be processed.");
      status.textContent = "Shared.";
      location.assign(`/${enc(done.author.username)}`);
    } catch (error) {
      status.textContent = error.message;
      progress.hidden = true;
      button.disabled = false;
    }
  }

  async function shareStory(form) {
    const status = form.querySelector(".story-status");
    const file = form.querySelector('input[type="file"]').files[0];
    if (!file) {
      status.textContent = "Choose a photo for your story.";
      return;
    }
    const body = new FormData();
    body.append("file", file);
    const button = form.querySelector("button");
    button.disabled = true;
    try {
      const story = await upload("/api/v1/stories", body, (percent) => { status.textContent = `Uploading\u2026 ${percent}%`; });
      status.textContent = "Processing\u2026";
      const done = await untilProcessed(`/api/v1/stories/${story.id}`, () => {});
      if (done.status === "failed") throw new ApiError(422, done.error?.message || "The photo could not be processed.");
      status.textContent = "Shared to your story.";
      location.reload();
    } catch (error) {
      status.textContent = error.message;
      button.disabled = false;
    }
  }

  // ---- The story viewer ----------------------------------------------------------------

  const STORY_SECONDS = 5;
  const viewer = document.getElementById("story-viewer");
  const me = document.querySelector(".topbar .me")?.getAttribute("href")?.slice(1) || "";
  let playing = null; // {stories, index, queue, timer, opener}

  function storyMedia(media) {
    const variants = media.variants || [];
    if (media.kind === "video") {
      const video = el("video", { autoplay: true, playsinline: true, muted: true, poster: variantUrl(variants, "poster", "image/jpeg") });
      video.muted = true;
      const url = variantUrl(variants, "mp4_story", "video/mp4") || variantUrl(variants, "mp4_720", "video/mp4");
      if (url) video.append(el("source", { type: "video/mp4", src: url }));
      return video;
    }
    const picture = el("picture");
    const webp = variantUrl(variants, "story", "image/webp");
    if (webp) picture.append(el("source", { type: "image/webp", srcset: webp }));
    picture.append(el("img", {
      src: variantUrl(variants, "story", "image/jpeg") || variantUrl(variants, "w1080", "image/jpeg"),
      alt: media.alt_text || "", width: media.width, height: media.height,
    }));
    return picture;
  }

  function showStory() {
    const { stories, index } = playing;
    const story = stories[index];
    clearTimeout(playing.timer);
    viewer.querySelector(".story-user").textContent = story.author.username;
    const bars = viewer.querySelector(".bars");
    bars.replaceChildren(...stories.map((_, i) => el("span", { class: i < index ? "done" : i === index ? "now" : "" }, [el("i")])));
    const bar = bars.children[index].firstChild;
    bar.style.animationDuration = `${STORY_SECONDS}s`;
    viewer.querySelector(".story-stage").replaceChildren(storyMedia(story.media));
    const own = story.author.username === me;
    const viewersButton = viewer.querySelector(".viewers-button");
    viewersButton.hidden = !own || !playing.live;
    viewer.querySelector(".viewers").hidden = true;
    if (!own && !story.seen) {
      story.seen = true;
      api("POST", `/api/v1/stories/${story.id}/view`).catch(() => {});
    }
    playing.timer = setTimeout(nextStory, STORY_SECONDS * 1000);
  }

  function nextStory() {
    if (!playing) return;
    if (playing.index + 1 < playing.stories.length) {
      playing.index += 1;
      showStory();
      return;
    }
    playing.ring?.classList.remove("unseen");
    const following = playing.queue.shift();
    if (following) openUserStories(following, playing.queue);
    else closeViewer();
  }

  function previousStory() {
    if (!playing) return;
    if (playing.index > 0) playing.index -= 1;
    showStory();
  }

  function openViewer(stories, options) {
    if (!viewer || !stories.length) return;
    const opener = playing?.opener || document.activeElement;
    if (playing) clearTimeout(playing.timer);
    playing = { stories, index: 0, queue: [], ...options, opener };
    // Start at the first story not yet seen.
    const unseen = stories.findIndex((s) => !s.seen);
    playing.index = unseen > 0 ? unseen : 0;
    viewer.hidden = false;
    document.body.classList.add("viewing");
    viewer.querySelector(".close").focus();
    showStory();
  }

  function closeViewer() {
    if (!playing) return;
    clearTimeout(playing.timer);
    if (playing.stories.every((s) => s.seen)) playing.ring?.classList.remove("unseen");
    const opener = playing.opener;
    playing = null;
    viewer.hidden = true;
    viewer.querySelector(".story-stage").replaceChildren();
    document.body.classList.remove("viewing");
    if (opener && opener.focus) opener.focus();
  }

  async function openUserStories(ring, queue) {
    const username = ring.dataset.username;
    try {
      const list = await api("GET", `/api/v1/users/${enc(username)}/stories`);
      const ready = list.items.filter((s) => s.status === "ready");
      if (!ready.length) {
        ring.classList.remove("unseen");
        return;
      }
      const rest = queue || [...document.querySelectorAll(".tray .story-ring")].filter((r) =>
        r.compareDocumentPosition(ring) & Node.DOCUMENT_POSITION_PRECEDING);
      openViewer(ready, { ring, queue: rest, live: true });
    } catch (error) {
      ring.title = error.message;
    }
  }

  async function openHighlight(button) {
    try {
      const highlight = await api("GET", `/api/v1/highlights/${button.dataset.highlightId}`);
      openViewer(highlight.stories.filter((s) => s.status === "ready").map((s) => ({ ...s, seen: true })), { live: false });
    } catch (error) {
      button.title = error.message;
    }
  }

  async function showViewers() {
    const story = playing.stories[playing.index];
    const list = viewer.querySelector(".viewers");
    clearTimeout(playing.timer); // reading the list pauses the story
    try {
      const page = await api("GET", `/api/v1/stories/${story.id}/viewers?limit=100`);
      list.replaceChildren(...(page.items.length ? page.items.map((v) => el("li", { text: v.user.username })) : [el("li", { text: "No viewers yet." })]));
      list.hidden = false;
    } catch (error) {
      list.replaceChildren(el("li", { text: error.message }));
      list.hidden = false;
    }
  }

  if (viewer) {
    viewer.querySelector(".close").addEventListener("click", closeViewer);
    viewer.querySelector(".story-next").addEventListener("click", nextStory);
    viewer.querySelector(".story-prev").addEventListener("click", previousStory);
    viewer.querySelector(".viewers-button").addEventListener("click", showViewers);
    document.addEventListener("keydown", (event) => {
      if (!playing) return;
      if (event.key === "Escape") closeViewer();
      else if (event.key === "ArrowRight") nextStory();
      else if (event.key === "ArrowLeft") previousStory();
      else return;
      event.preventDefault();
    });
  }

  // ---- Start ---------------------------------------------------------------------------

  placeholders(document);
  infiniteScroll();
  newPostPage();
})();
