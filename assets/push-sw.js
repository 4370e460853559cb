// Fictures' service worker: shows Web Push notifications, opens their story on click.
// The push's payload is JSON from the server (fictures/push.py `payload`):
// {id, title, body, url, tag}; it is shown as plain text.
"use strict";

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

function sameOrigin(url) {
  try {
    const target = new URL(url, self.location.origin);
    return target.origin === self.location.origin ? target.href : self.location.origin + "/";
  } catch (e) {
    return self.location.origin + "/";
  }
}

self.addEventListener("push", (event) => {
  let data = {};
  try {
    data = event.data ? event.data.json() : {};
  } catch (e) {
    data = { body: event.data ? event.data.text() : "" };
  }
  const shown = self.registration.showNotification(String(data.title || "Fictures"), {
    body: String(data.body || ""),
    tag: String(data.tag || "fictures"),
    data: { url: sameOrigin(data.url || "/community") },
  });
  try {
    event.waitUntil(shown);
  } catch (e) {
    // A push dispatched by a page or devtools (untrusted) cannot be extended; it still shows.
  }
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const url = (event.notification.data && event.notification.data.url) || self.location.origin + "/";
  event.waitUntil(
    self.clients.matchAll({ type: "window", includeUncontrolled: true }).then((windows) => {
      for (const client of windows) {
        if (client.url === url && "focus" in client) return client.focus();
      }
      return self.clients.openWindow(url);
    }),
  );
});
