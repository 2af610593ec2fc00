// sesame-pi: copy your Sesame sign-in record. Paste this into the DevTools console of the Sesame
// web app's tab while signed in; then give what it copied to `sesame-pi login` (or the SD card).
(async () => {
  const put = typeof copy === "function" ? copy : null; // DevTools' copy(), taken before any await
  const ask = (request) => new Promise((ok, no) => {
    request.onsuccess = () => ok(request.result);
    request.onerror = () => no(request.error);
  });
  const db = await ask(indexedDB.open("firebaseLocalStorageDb"));
  const store = "firebaseLocalStorage";
  const rows = db.objectStoreNames.contains(store)
    ? await ask(db.transaction(store, "readonly").objectStore(store).getAll())
    : [];
  db.close();
  const users = rows.filter((r) => r && r.value && r.value.stsTokenManager
    && r.value.stsTokenManager.refreshToken);
  const row = users.find((r) => !r.value.isAnonymous); // the service refuses anonymous ones
  if (!row) {
    console.warn(users.length
      ? "sesame-pi: this tab is signed in only as an anonymous visitor, which the service"
        + " refuses: sign in with your account at the Sesame web app first"
      : "sesame-pi: no signed-in user in this tab: sign in at the Sesame web app first");
    return;
  }
  const record = JSON.stringify(row.value);
  if (put) {
    put(record);
    console.log(`sesame-pi: copied the sign-in of ${row.value.email || "your account"};`
      + " paste it into `sesame-pi login` or save it as sesame-pi/auth.json on the SD card");
  } else {
    console.log(record);
  }
})();
