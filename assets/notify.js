// Fictures notifications in the browser: system notifications while the page is
// hidden (opt-in), and Web Push (subscribe / unsubscribe). Loaded on every page;
// the navbar's bell and account menu call `window.fxNotify`.
// Every text shown comes from the server as data and is shown as plain text.
(function () {
  "use strict";
  const DESKTOP_KEY = "fictures_notify_desktop";
  // Set while this browser is subscribed to pushes: a user with a tab open gets
  // no push (the tab shows the notification), so a hidden tab raises it instead.
  const PUSH_KEY = "fictures_notify_push";
  const TOKEN_KEY = "fictures_token";
  const WORKER = "/push-sw.js";

  const supported = () => "Notification" in window;
  const pushSupported = () =>
    supported() && "serviceWorker" in navigator && "PushManager" in window;

  function token() {
    const raw = window.localStorage.getItem(TOKEN_KEY) || "";
    // Reflex may store the value JSON-encoded.
    try {
      const parsed = JSON.parse(raw);
      return typeof parsed === "string" ? parsed : raw;
    } catch (e) {
      return raw;
    }
  }

  async function api(method, path, body) {
    const response = await fetch(path, {
      method,
      headers: { "Content-Type": "application/json", Authorization: "Bearer " + token() },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!response.ok && response.status !== 404) {
      throw new Error("push subscription request failed: " + response.status);
    }
    return response;
  }

  function b64urlToBytes(text) {
    const padded = (text + "===".slice((text.length + 3) % 4)).replace(/-/g, "+").replace(/_/g, "/");
    return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
  }

  async function registration() {
    return navigator.serviceWorker.getRegistration("/");
  }

  async function pushStatus() {
    if (!pushSupported()) return "unsupported";
    if (Notification.permission === "denied") return "denied";
    const reg = await registration();
    const sub = reg && (await reg.pushManager.getSubscription());
    return sub ? "on" : "off";
  }

  async function pushOn() {
    if (!pushSupported()) return "unsupported";
    // Asked here only: this runs from a click in the account menu.
    if ((await Notification.requestPermission()) !== "granted") return "denied";
    const key = await (await fetch("/api/push/key")).json();
    if (!key.enabled) return "unavailable";
    const reg = await navigator.serviceWorker.register(WORKER, { scope: "/" });
    await navigator.serviceWorker.ready;
    let sub = await reg.pushManager.getSubscription();
    if (!sub) {
      sub = await reg.pushManager.subscribe({
        userVisibleOnly: true,
        applicationServerKey: b64urlToBytes(key.publicKey),
      });
    }
    await api("POST", "/api/push/subscriptions", sub.toJSON());
    window.localStorage.setItem(PUSH_KEY, "1");
    return "on";
  }

  async function pushOff(tellServer) {
    if (!pushSupported()) return "unsupported";
    window.localStorage.setItem(PUSH_KEY, "");
    const reg = await registration();
    const sub = reg && (await reg.pushManager.getSubscription());
    if (sub) {
      try {
        if (tellServer) await api("DELETE", "/api/push/subscriptions", { endpoint: sub.endpoint });
      } finally {
        await sub.unsubscribe(); // the push service forgets it: later pushes get 410
      }
    }
    return "off";
  }

  async function guarded(work) {
    try {
      return await work();
    } catch (e) {
      console.warn("fictures push:", e);
      return "error";
    }
  }

  function desktopStatus() {
    if (!supported()) return "unsupported";
    if (Notification.permission === "denied") return "denied";
    return window.localStorage.getItem(DESKTOP_KEY) === "1" &&
      Notification.permission === "granted" ? "on" : "off";
  }

  async function desktopToggle() {
    if (!supported()) return "unsupported";
    if (desktopStatus() === "on") {
      window.localStorage.setItem(DESKTOP_KEY, "");
      return "off";
    }
    // Asked here only: this runs from a click in the account menu.
    if ((await Notification.requestPermission()) !== "granted") return "denied";
    window.localStorage.setItem(DESKTOP_KEY, "1");
    return "on";
  }

  // A notification arrived in this tab (the bell's hook calls this): while the
  // page is hidden and the reader opted in (to alerts, or to pushes, which skip
  // users with a tab open), raise a system notification. The
  // tag is the notification's: several hidden tabs of one user show it once.
  function announce(card) {
    const wanted = desktopStatus() === "on" ||
      (window.localStorage.getItem(PUSH_KEY) === "1" && Notification.permission === "granted");
    if (!document.hidden || !wanted) return false;
    const shown = new Notification("New post on " + card.story_title, {
      body: card.actor + ": " + card.title,
      tag: "fictures-notification-" + card.id,
    });
    shown.onclick = () => {
      window.focus();
      window.location.assign("/community/story/" + card.story_id);
    };
    return true;
  }

  window.fxNotify = {
    pushStatus: () => guarded(pushStatus),
    pushToggle: () =>
      guarded(async () => ((await pushStatus()) === "on" ? pushOff(true) : pushOn())),
    // Logging out: this browser stops receiving the previous user's pushes.
    forget: () => guarded(() => pushOff(true)),
    desktopStatus,
    desktopToggle: () => guarded(desktopToggle),
    announce,
  };
})();
